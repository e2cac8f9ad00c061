"""Constraints applied to every constrained row of a decode step at once, overlapped with the
model's forward pass.

The hook is called with a step's input tokens (the array the previous step sampled) and
the logits of the forward pass that takes them, before sampling. It advances each
constrained row's constraint by its row's token, writes every row's mask on the host
(guided/masks.py) and masks all rows with one compiled kernel (a free row's mask allows
every token). Only the sampling waits for the masks, so a constraint adds no device round
trip. The host's work is hidden behind one of two things, whichever the step has spare:

- the device (`device` order): the forward pass is queued first, then the tokens are read
  (computed before it, so reading them never waits for it) and the masks written while
  the device runs it. Best when the device is the bottleneck: a big model, a big batch.
- the dispatch (`host` order): the tokens are read first, the masks are written on the
  writer thread while this thread queues the forward pass (encoding its kernels takes the
  host about 1.2 ms for a 1B model on an H200, with the GIL released). Best when the host
  is the bottleneck: a small model on a fast GPU, where the device waits for the host
  anyway and the device order adds the whole mask time to every step.

The hook picks the order from what it sees: the tokens are read at once when they were
ready in the device order (the host is the bottleneck), and the device order is taken back
when reading them first had to wait (the device is). On MLX's CPU device there is only the
device order: the forward pass runs on the host's own cores (queuing it returns when most
of it has run), and a writer thread would take a core from it.

The batch generator calls it through `backend.set_decode_hook`, and a sequence decoding
alone (engine/solo.py) calls it itself. Constraints are not mlx-lm logits processors: a row
with a processor gets its own slice, call and concatenation every step (and a lone
sequence a copy of its whole context), and on a fast GPU that, not the mask, was most of a
constraint's cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from mlx_textgen.guided.guide import Guide
from mlx_textgen.guided.masks import MaskBuffer, writer

READY_S = 50e-6  # reading the tokens took less: they were ready


@dataclass
class _Row:
    guide: Guide
    next_input: int  # the generated-token index of the row's next input (-1: a prompt token)


class RowMasks:
    """The constrained rows of one model's decode steps, by uid: its decode hook."""

    overlap = True  # hide the masks behind the forward pass (off: write them, then queue it)

    def __init__(self, vocab_size: int) -> None:
        self.words = (vocab_size + 31) // 32
        self._rows: dict[int, _Row] = {}
        self._masks = MaskBuffer(self.words)
        self.host_order = False  # read the tokens first, write the masks during the dispatch
        self._separate_device: bool | None = None  # a GPU: the host order can pay
        self.orders = {"device": 0, "host": 0}  # steps taken in each order

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
        host = self._masks.rows(len(uids))
        read = any(row.next_input >= 0 for _, row in picked)
        if not self.overlap:
            self._write(picked, tokens.tolist() if read else [], host)
        elif self.host_order:  # (if reading waits, the next step takes the device order)
            self.orders["host"] += 1
            ids = self._read(tokens) if read else []
            writer.start(lambda: self._write(picked, ids, host))
            try:
                mx.async_eval(logits)  # drops the GIL while it encodes the kernels
            finally:
                writer.join()
        else:
            self.orders["device"] += 1
            mx.async_eval(logits)  # the forward pass runs while the host works below
            ids = self._read(tokens) if read else []
            self._write(picked, ids, host)
        return self._masks.apply(logits)

    def _read(self, tokens: mx.array) -> list[int]:
        """The step's input tokens; whether they were ready picks the next step's order."""
        t = time.perf_counter()
        ids = tokens.tolist()
        waited = time.perf_counter() - t
        if self._separate_device is None:  # asked on the model thread, whose device it is
            self._separate_device = mx.default_device().type == mx.DeviceType.gpu
        self.host_order = self._separate_device and waited < READY_S
        return ids

    @staticmethod
    def _write(picked: list[tuple[int, _Row]], ids: list[int], host: np.ndarray) -> None:
        """Advance each row's constraint by its input token and write every row's mask, all
        allowed for free rows (no MLX)."""
        host.fill(-1)
        for i, row in picked:
            guide = row.guide
            if row.next_input >= 0:
                guide.observe(row.next_input, ids[i])
            row.next_input += 1
            if guide.closed:
                continue
            guide.constraint.fill_mask(host[i])  # untouched (all allowed) when free
