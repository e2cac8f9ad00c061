"""A constraint applied to one sequence's logits, overlapped with the model's forward pass.

The batch generator (and the lone-sequence decoder) call logits processors while they
build step t+1, whose forward pass takes token t as a device array. The guide first
queues that forward pass, then waits for token t (which the device computes first),
advances the constraint and computes the mask on the host while the forward runs; only
the sampling of step t+1 waits for the mask. So a constraint adds no device round trip.

The mask is applied with portable MLX operations (shift, and, where): no backend kernels.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlx_textgen.guided.constraint import Constraint, mask_words


def apply_bitmask(logits: mx.array, words: np.ndarray) -> mx.array:
    """`logits` (1, V) with every token whose bit is clear in `words` set to -inf; tokens
    past the bitmask's end (a model vocabulary larger than the tokenizer's) too."""
    # Built per call: MLX arrays belong to the stream of the thread that made them.
    bits = (mx.array(words)[:, None] >> mx.arange(32, dtype=mx.int32)) & 1
    allowed = bits.reshape(-1)
    vocab = logits.shape[-1]
    if allowed.size >= vocab:
        allowed = allowed[:vocab]
    else:
        allowed = mx.concatenate([allowed, mx.zeros((vocab - allowed.size,), dtype=allowed.dtype)])
    return mx.where(allowed.astype(mx.bool_), logits, mx.array(-mx.inf, dtype=logits.dtype))


class Guide:
    """One sequence's constraint as an mlx-lm logits processor `(context, logits) -> logits`.

    `observe(index, token)` advances the constraint by the `index`-th generated token once,
    whoever calls first: the processor (at the next step) or the sequence's accounting
    (for a last token, after which no step runs)."""

    def __init__(self, constraint: Constraint, prompt_len: int, vocab_size: int) -> None:
        self.constraint = constraint
        self.prompt_len = prompt_len
        self.consumed = 0  # generated tokens the constraint has accepted
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

    def __call__(self, context: mx.array, logits: mx.array) -> mx.array:
        generated = context.shape[0] - self.prompt_len
        if generated > self.consumed:
            mx.async_eval(logits)  # the forward pass runs while the host works below
            start = self.prompt_len + self.consumed
            for token in context[start:].tolist():
                self.observe(self.consumed, token)
        if not self.constraint.fill_mask(self._words):
            return logits
        return apply_bitmask(logits, self._words)
