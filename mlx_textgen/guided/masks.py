"""Getting a decode step's token masks from the host to the device, and applying them.

Masks are packed words (4 bytes per 32 tokens), unpacked and applied on the device by one
compiled function of portable MLX operations: nothing backend-specific.

`MaskBuffer` is one MLX array the device reads in place, written on the host through its
NumPy view (MLX's documented `np.array(a, copy=False)`), so no step allocates or uploads
an array: on CUDA a new host array costs a managed allocation and a copy.

`MaskWriter` is a thread that writes a step's masks (llguidance, NumPy: never MLX; only the
model thread calls MLX) while the model thread dispatches the step's forward pass, which
releases the GIL for as long as it takes the host to encode the kernels (about 1.2 ms for
a 1B model on an H200, more than the masks of a batch take).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import mlx.core as mx
import numpy as np


@mx.compile
def _select_rows(logits: mx.array, words: mx.array) -> mx.array:
    """(B, 1, V) logits, (B, W) packed masks: allowed logits kept, the rest -inf."""
    bits = (words[:, :, None] >> mx.arange(32, dtype=mx.int32)) & 1
    allowed = bits.reshape(words.shape[0], 1, -1)[..., : logits.shape[-1]].astype(mx.bool_)
    return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))


class MaskBuffer:
    """Packed masks for up to `capacity` rows in one MLX array that the device reads in
    place. Model thread only, except that `rows()`'s view may be written by any thread
    until the next `apply()`."""

    def __init__(self, words: int) -> None:
        self.words = words
        self._device: mx.array | None = None
        self._host: np.ndarray | None = None
        self._reader: mx.array | None = None  # the last step's masked logits

    def rows(self, n: int) -> np.ndarray:
        """The host view of rows 0..n-1, safe to write (it holds the last step's masks): the
        last step that read the buffer has run (its tokens were read before this step's
        masks are written, so in practice this never waits). Writing it is for the writer
        thread: on CUDA the first write after the device read the buffer moves its pages
        back to the host, which takes the writing thread about 70 us."""
        if self._host is None or len(self._host) < n:
            capacity = 1 << max(n - 1, 0).bit_length()
            self._device = mx.array(np.full((capacity, self.words), -1, dtype=np.int32))
            mx.eval(self._device)
            self._host = np.array(self._device, copy=False)
            self._reader = None
        elif self._reader is not None:
            mx.eval(self._reader)
        return self._host[:n]

    def apply(self, logits: mx.array) -> mx.array:
        """`logits` (B, 1, V) masked by rows 0..B-1 as last written."""
        assert self._device is not None
        b = logits.shape[0]
        words = self._device if b == len(self._device) else self._device[:b]
        self._reader = _select_rows(logits, words)
        return self._reader


class MaskWriter:
    """One daemon thread that runs a job while the model thread does something else."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._busy = False

    def start(self, job: Callable[[], None]) -> None:
        assert not self._busy, "one job at a time"
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mask-writer", daemon=True)
            self._thread.start()
        self._busy = True
        self._jobs.put(job)

    def join(self) -> None:
        """Wait for the job; its exception, if it raised one, is raised here."""
        error = self._done.get()
        self._busy = False
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - the model thread raises it: none is lost
                self._done.put(exc)
            else:
                self._done.put(None)


writer = MaskWriter()  # every model's hook runs on the one model thread: one writer serves all
