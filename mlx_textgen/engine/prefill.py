"""Chunked prefill of one prompt, shared by the n choices that sample from it.

The prompt (all but its last token) is run through the model a chunk at a time, so a long
prompt interleaves with the decode steps of running streams instead of freezing them.
When it is done, every choice starts decoding from the same cache: mlx-lm's batch caches
copy a sequence's cache when they merge it, so one prefill serves all n choices.

A cache that can't be cut to a prefix (sliding-window or state layers) is only reusable
where its exact state was stored, so prefill then stops at each of the prompt's
``Checkpoints`` (where its system prompt and earlier turns end) and stores the state there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import mlx.core as mx

from mlx_textgen.engine.request import Request


@dataclass(frozen=True)
class Checkpoints:
    """Prompt positions where prefill stops, and what stores the state there."""

    positions: tuple[int, ...]  # ascending
    save: Callable[[list[int], list[Any]], None]  # (tokens so far, caches holding them)


class PromptFeed(Protocol):
    """Feeds prompt chunks other than as token ids (a vision prompt's embeddings)."""

    def step(self, cache: list[Any], start: int, n: int) -> None: ...

    def begin_decode(self, cache: list[Any]) -> None: ...


class PrefillJob:
    """The prompt of a group of requests (n > 1 choices share one) being prefilled."""

    def __init__(
        self,
        requests: list[Request],
        cache: list[Any],
        start: int = 0,
        checkpoints: Checkpoints | None = None,
        feed: PromptFeed | None = None,
    ) -> None:
        self.requests = requests
        self.prompt = requests[0].prompt_ids
        self.cache = cache  # per-layer mlx-lm caches, already holding prompt[:start]
        self.position = start
        self.cached_tokens = start
        self.pinned: list[Any] = []  # prompt cache entries in use until the prefill is done
        self.checkpoints = checkpoints
        self.feed = feed

    @property
    def target(self) -> int:
        """Tokens to prefill: all but the last, which the first decode step consumes."""
        return len(self.prompt) - 1

    @property
    def done(self) -> bool:
        return self.position >= self.target

    def step(self, model: Any, budget: int) -> int:
        """Prefill up to `budget` more tokens; returns how many were computed.

        A step ends at a checkpoint, so the next chunk starts there exactly as it does for a
        later prompt that resumes from it: same chunks, same arithmetic, the same tokens."""
        n = min(budget, self._next_stop() - self.position)
        if n <= 0:
            return 0
        if self.feed is not None:
            self.feed.step(self.cache, self.position, n)
        else:
            model(mx.array(self.prompt[self.position : self.position + n])[None], cache=self.cache)
        mx.eval([c.state for c in self.cache])
        self.position += n
        if self.checkpoints is not None and self.position in self.checkpoints.positions:
            self.checkpoints.save(self.prompt[: self.position], self.cache)
        return n

    def _next_stop(self) -> int:
        """The next checkpoint after the current position, else the target."""
        if self.checkpoints is not None:
            for p in self.checkpoints.positions:
                if self.position < p < self.target:
                    return p
        return self.target

    def drop(self, request_id: str) -> bool:
        """Forget one request (aborted); True when none are left."""
        self.requests = [r for r in self.requests if r.request_id != request_id]
        return not self.requests
