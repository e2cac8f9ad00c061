"""SamplingParams -> an mlx-lm style sampler and logits processors for one sequence.

Each seeded sequence draws from its own PRNG key, so its tokens do not depend on what
else shares the batch. Penalties follow OpenAI's definitions: presence and frequency
count generated tokens only; repetition (HF/vLLM style) covers prompt and output.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import mlx.core as mx

from mlx_textgen import backend
from mlx_textgen.engine.request import SamplingParams

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


def greedy(logprobs: mx.array) -> mx.array:
    return mx.argmax(logprobs, axis=-1)


def make_sampler(params: SamplingParams) -> Sampler:
    """Greedy shares one function object so a batch of greedy sequences samples in one call."""
    if params.greedy:
        return greedy
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
    state = {"key": mx.random.key(seed)}
    inv_temp = 1.0 / params.temperature
    top_p, top_k, min_p = params.top_p, params.top_k, params.min_p

    def sample(logprobs: mx.array) -> mx.array:
        if 0.0 < top_p < 1.0:
            logprobs = backend.apply_top_p(logprobs, top_p)
        if min_p > 0.0:
            logprobs = backend.apply_min_p(logprobs, min_p)
        if 0 < top_k < logprobs.shape[-1]:
            logprobs = backend.apply_top_k(logprobs, top_k)
        state["key"], sub = mx.random.split(state["key"])
        return mx.random.categorical(logprobs * inv_temp, key=sub)

    return sample


class _OutputCounts:
    """Counts of generated tokens, updated from the context the batch passes in."""

    def __init__(self, prompt_len: int, vocab_size: int) -> None:
        self.seen = prompt_len
        self.counts = mx.zeros((vocab_size,), dtype=mx.float32)

    def update(self, context: mx.array) -> mx.array:
        n = context.shape[0]
        if n > self.seen:
            self.counts = self.counts.at[context[self.seen :]].add(1.0)
            self.seen = n
        return self.counts


def make_logits_processors(
    params: SamplingParams, prompt_len: int, vocab_size: int, eos_ids: frozenset[int]
) -> list[LogitsProcessor]:
    procs: list[LogitsProcessor] = []
    if params.logit_bias:
        idx = mx.array(list(params.logit_bias.keys()))
        vals = mx.array(list(params.logit_bias.values()), dtype=mx.float32)
        procs.append(lambda _ctx, logits: logits.at[:, idx].add(vals.astype(logits.dtype)))
    if params.presence_penalty or params.frequency_penalty:
        counts = _OutputCounts(prompt_len, vocab_size)
        pres, freq = params.presence_penalty, params.frequency_penalty

        def penalize(ctx: mx.array, logits: mx.array) -> mx.array:
            c = counts.update(ctx)
            delta = freq * c + pres * (c > 0)
            return logits - delta.astype(logits.dtype)

        procs.append(penalize)
    if params.repetition_penalty != 1.0:
        procs.append(_repetition_penalty(params.repetition_penalty, vocab_size))
    if params.min_tokens > 0:
        procs.append(_min_tokens(params, prompt_len, eos_ids))
    return procs


def _repetition_penalty(penalty: float, vocab_size: int) -> LogitsProcessor:
    counts = _OutputCounts(0, vocab_size)  # prompt tokens count too

    def apply(ctx: mx.array, logits: mx.array) -> mx.array:
        seen = counts.update(ctx) > 0
        scaled = mx.where(logits < 0, logits * penalty, logits / penalty)
        return mx.where(seen, scaled, logits)

    return apply


def _min_tokens(params: SamplingParams, prompt_len: int, eos_ids: frozenset[int]) -> LogitsProcessor:
    banned = sorted(set(params.stop_token_ids) | (set() if params.ignore_eos else set(eos_ids)))
    idx = mx.array(banned) if banned else None

    def apply(ctx: mx.array, logits: mx.array) -> mx.array:
        # ctx holds the prompt plus the tokens generated so far.
        if idx is None or ctx.shape[0] - prompt_len >= params.min_tokens:
            return logits
        return logits.at[:, idx].add(-mx.inf)

    return apply
