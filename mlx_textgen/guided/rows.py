"""Constraints applied to every constrained row of a decode step at once, overlapped with the
model's forward pass.

The hook is called with a step's input tokens, the array the previous step sampled, and
the logits of the forward pass that takes them, before sampling. It queues
that forward pass, reads the tokens (computed before it, so reading them never waits for
it), advances each constrained row's constraint by its row's token, writes every row's mask
on the host while the device runs the forward pass, and masks all rows with one upload and
one compiled kernel (a free row's mask allows every token). Only the sampling waits for the
masks, so a constraint adds no device round trip.

The batch generator calls it through `backend.set_decode_hook`, and a sequence decoding
alone (engine/solo.py) calls it itself. Constraints are not mlx-lm logits processors: a row
with a processor gets its own slice, call and concatenation every step (and a lone
sequence a copy of its whole context), and on a fast GPU that, not the mask, was most of a
constraint's cost. The masks are packed words (4 bytes per 32 tokens), unpacked on the
device with portable MLX operations: nothing backend-specific.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from mlx_textgen.guided.guide import Guide


@mx.compile
def _select_rows(logits: mx.array, words: mx.array) -> mx.array:
    """(B, 1, V) logits, (B, W) packed masks: allowed logits kept, the rest -inf."""
    bits = (words[:, :, None] >> mx.arange(32, dtype=mx.int32)) & 1
    allowed = bits.reshape(words.shape[0], 1, -1)[..., : logits.shape[-1]].astype(mx.bool_)
    return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))


def apply_masks(logits: mx.array, words: np.ndarray) -> mx.array:
    """`logits` (B, 1, V) with every token whose bit is clear in its row of `words`
    ((B, at least V / 32) int32 on the host) set to -inf."""
    return _select_rows(logits, mx.array(words))


@dataclass
class _Row:
    guide: Guide
    next_input: int  # the generated-token index of the row's next input (-1: a prompt token)


class RowMasks:
    """The constrained rows of one model's decode steps, by uid: its decode hook."""

    overlap = True  # queue the forward pass before the host computes the masks

    def __init__(self, vocab_size: int) -> None:
        self.words = (vocab_size + 31) // 32
        self._rows: dict[int, _Row] = {}

    def attach(self, uid: int, guide: Guide, generated: int) -> None:
        """Row `uid` decodes under `guide`; `generated` tokens were sampled before its first
        input (so that input is generated token `generated - 1`, or a prompt token). The
        guide's earlier row (a lone decode moving into the batch) is forgotten."""
        for old in [u for u, r in self._rows.items() if r.guide.closed or r.guide is guide]:
            del self._rows[old]
        self._rows[uid] = _Row(guide, generated - 1)

    @property
    def engaged(self) -> bool:
        """Whether any constrained row is still decoding (else the step needs no hook)."""
        return any(not r.guide.closed for r in self._rows.values())

    def __call__(self, uids: list[int], tokens: mx.array, logits: mx.array) -> mx.array:
        """Mask the constrained rows of (B, 1, V) `logits`, whose forward pass takes the (B,)
        `tokens` (the sampled array itself: a new view of it would be computed after the
        forward pass, and reading it would wait for that)."""
        rows = self._rows
        picked = [(i, rows[u]) for i, u in enumerate(uids) if u in rows]
        if not picked:
            return logits
        if self.overlap:
            mx.async_eval(logits)  # the forward pass runs while the host works below
        ids = tokens.tolist() if any(row.next_input >= 0 for _, row in picked) else []
        host = np.full((len(uids), self.words), -1, dtype=np.int32)
        for i, row in picked:
            guide = row.guide
            if row.next_input >= 0:
                guide.observe(row.next_input, ids[i])
            row.next_input += 1
            if guide.closed:
                continue
            guide.constraint.fill_mask(host[i])  # untouched (all allowed) when free
        return apply_masks(logits, host)
