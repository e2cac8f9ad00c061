"""Decoding a lone sequence without batch bookkeeping.

mlx-lm's batch caches add masks, padding and per-row bookkeeping to every step; with one
sequence they halve decode speed on a fast GPU. When a sequence decodes alone it runs here
on plain caches, pipelined like mlx-lm's `generate_step`; when another joins, `handover`
gives the batch generator everything it needs to carry on from the same state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx


@dataclass
class SoloResponse:
    """Shaped like a batch generator response, so the loop treats both alike."""

    uid: int
    token: int
    logprobs: mx.array
    finish_reason: str | None


@dataclass
class Handover:
    """What the batch generator needs to carry on: the next token to feed, the cache that
    holds everything before it, those tokens, and how many tokens may still be generated."""

    next_token: int
    cache: list[Any]
    context: list[int]
    remaining: int


class SoloDecoder:
    """One sequence, one token per `step`, the following step already queued on the device."""

    def __init__(
        self,
        model: Any,
        cache: list[Any],
        prompt: list[int],
        sampler: Callable[[mx.array], mx.array],
        processors: list[Callable[[mx.array, mx.array], mx.array]],
        max_tokens: int,
        stop_ids: frozenset[int],
        uid: int,
        hook: Callable[[list[int], mx.array, mx.array], mx.array] | None = None,
    ) -> None:
        self.model = model
        self.cache = cache
        self.sampler = sampler
        self.processors = processors
        self.max_tokens = max_tokens
        self.stop_ids = stop_ids
        self.uid = uid
        self.hook = hook  # the decode step's logits hook (a constraint's mask, guided/rows.py)
        self.generated = 0
        self.context = list(prompt[:-1])  # tokens whose KV is in the cache
        self._feed(mx.array(prompt[-1:]))
        self.context.append(prompt[-1])

    def _feed(self, y: mx.array) -> None:
        """Run `y` (a lazy token is fine) through the model and queue sampling the next one."""
        logits = self.model(y[None], cache=self.cache)
        if self.hook is not None:
            logits = self.hook([self.uid], y, logits)  # `y` itself: see guided/rows.py
        logits = logits[:, -1, :]
        if self.processors:
            ctx = mx.concatenate([mx.array(self.context, dtype=y.dtype), y])
            for proc in self.processors:
                logits = proc(ctx, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        token = self.sampler(logprobs)
        mx.async_eval(token, logprobs)
        self._pending = (token, logprobs)

    def _take(self, token: mx.array, logprobs: mx.array) -> SoloResponse:
        t = int(token.item())
        self.generated += 1
        finish = "stop" if t in self.stop_ids else "length" if self.generated >= self.max_tokens else None
        return SoloResponse(self.uid, t, logprobs[0], finish)

    def step(self) -> SoloResponse:
        token, logprobs = self._pending
        fed = self.generated + 1 < self.max_tokens
        if fed:
            self._feed(token)  # queued before we wait on `token`, as generate_step does
        response = self._take(token, logprobs)
        if fed:
            self.context.append(response.token)
        return response

    def handover(self) -> tuple[SoloResponse, Handover | None]:
        """End solo decoding: the token in flight is returned for the caller to emit and,
        unless it ends the sequence, is the first token the batch generator feeds."""
        response = self._take(*self._pending)
        finish, t = response.finish_reason, response.token
        if finish is not None:
            return response, None
        return response, Handover(t, self.cache, list(self.context), self.max_tokens - self.generated)
