"""A constraint applied to one sequence's logits, overlapped with the model's forward pass.

The batch generator (and the lone-sequence decoder) call logits processors while they
build step t+1, whose forward pass takes token t as a device array. The guide first
queues that forward pass, then waits for token t (which the device computes before it),
advances the constraint and computes the mask on the host while the forward runs; only
the sampling of step t+1 waits for the mask. So a constraint adds no device round trip.

The mask is applied with portable MLX operations (compiled by MLX into one kernel): no
backend-specific code.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np

from mlx_textgen.guided.constraint import Constraint, mask_words


@mx.compile
def _select(logits: mx.array, words: mx.array) -> mx.array:
    """One fused kernel: unpack the bitmask and keep the allowed logits (the rest -inf)."""
    bits = (words[:, None] >> mx.arange(32, dtype=mx.int32)) & 1
    allowed = bits.reshape(1, -1)[:, : logits.shape[-1]].astype(mx.bool_)
    return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))


def apply_bitmask(logits: mx.array, words: np.ndarray) -> mx.array:
    """`logits` (1, V) with every token whose bit is clear in `words` set to -inf; tokens
    past the bitmask's end (a model vocabulary larger than the tokenizer's) too. Only the
    packed words travel to the device (4 bytes per 32 tokens); unpacking and selecting are
    one compiled kernel."""
    vocab = logits.shape[-1]
    if words.size * 32 < vocab:
        words = np.pad(words, (0, (vocab + 31) // 32 - words.size))
    return _select(logits, mx.array(words))


class Guide:
    """One sequence's constraint as an mlx-lm logits processor `(context, logits) -> logits`,
    with `sampler(inner)` wrapping the sequence's sampler so the guide sees each sampled
    token as the array the sampler made: reading it waits for that sampling only, never for
    the forward pass queued after it (a new slice of the context would queue behind it).

    `observe(index, token)` advances the constraint by the `index`-th generated token once,
    whoever calls first: the processor (at the next step) or the sequence's accounting
    (for a last token, after which no step runs)."""

    def __init__(self, constraint: Constraint, vocab_size: int) -> None:
        self.constraint = constraint
        self.consumed = 0  # generated tokens the constraint has accepted
        self._sampled = 0
        self._pending: tuple[int, mx.array] | None = None
        self._words = mask_words(vocab_size)

    def observe(self, index: int, token: int) -> None:
        if index == self.consumed:
            self.constraint.accept(token)
            self.consumed += 1

    @property
    def finished(self) -> bool:
        return self.constraint.is_finished()

    def error(self) -> str | None:
        return self.constraint.error()

    def sampler(self, inner: Callable[[mx.array], mx.array]) -> Callable[[mx.array], mx.array]:
        def sample(logprobs: mx.array) -> mx.array:
            token = inner(logprobs)
            self._pending = (self._sampled, token)
            self._sampled += 1
            return token

        return sample

    def __call__(self, context: mx.array, logits: mx.array) -> mx.array:
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == self.consumed:
            mx.async_eval(logits)  # the forward pass runs while the host works below
            self.observe(pending[0], int(pending[1].item()))
        if not self.constraint.fill_mask(self._words):
            return logits
        return apply_bitmask(logits, self._words)
