"""Background writer for the disk tier: segment writes never delay a response.

The MLX thread converts a segment to numpy and calls ``submit``, which only enqueues.
One daemon thread drains the queue into ``DiskStore.put``. The queue is bounded in
bytes; a submission that would exceed the bound while others are pending is dropped (the
segment simply is not persisted), since waiting would stall generation.

A cache directory that can't be written (read-only, full, no permission) turns the disk
tier off for ``DISK_RETRY_S``: requests go on with the RAM tier, the log says so once per
outage, and the writer tries again after.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mlx_textgen.cache.store import DiskStore, SegmentRecord

log = logging.getLogger("mlx_textgen.cache")

OnDone = Callable[[SegmentRecord, int | None], None]
DEFAULT_MAX_PENDING_BYTES = 1 << 30
DISK_RETRY_S = 60.0
# The directory refuses writes as a whole: more writes would fail the same way.
_DISK_OFF_ERRNOS = frozenset(
    getattr(errno, name) for name in ("EROFS", "ENOSPC", "EACCES", "EPERM", "EDQUOT", "EFBIG")
    if hasattr(errno, name)
)


@dataclass
class _Job:
    record: SegmentRecord
    arrays: dict[str, np.ndarray]
    dtypes: dict[str, str]
    meta: dict[str, str] | None
    on_done: OnDone | None
    nbytes: int = field(default=0)


class DiskWriter:
    """Writes segments to a ``DiskStore`` on one background thread.

    ``on_done(record, result)`` runs on the writer thread after each submitted job:
    ``result`` is the bytes on disk, 0 when the store declined (bigger than its budget),
    or None when the write failed (logged). Callers must not mutate submitted arrays.
    """

    def __init__(self, store: DiskStore, max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES):
        self.store = store
        self.max_pending_bytes = int(max_pending_bytes)
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._pending_bytes = 0  # queued plus the job being written
        self._busy = False
        self._closed = False
        self._off_until: float | None = None  # the disk tier is off until then (monotonic)
        self._thread = threading.Thread(
            target=self._run, name="mlx_textgen-cache-writer", daemon=True
        )
        self._thread.start()

    @property
    def pending_bytes(self) -> int:
        """Array bytes submitted but not yet written."""
        with self._cond:
            return self._pending_bytes

    def submit(
        self,
        record: SegmentRecord,
        arrays: dict[str, np.ndarray],
        dtypes: dict[str, str],
        meta: dict[str, str] | None = None,
        on_done: OnDone | None = None,
    ) -> bool:
        """Queue one segment for writing; False (logged) if dropped. Never blocks on I/O."""
        nbytes = sum(int(a.nbytes) for a in arrays.values())
        with self._cond:
            if self._closed:
                log.warning("disk writer closed; segment %s dropped", record.key)
                return False
            if self._off_until is not None and time.monotonic() < self._off_until:
                return False  # the outage was logged when it began
            # An idle writer takes any one segment, so a prompt whose KV alone exceeds the
            # bound (an 8B model's 8,000 tokens are ~1 GB) is still persisted.
            if self._pending_bytes and self._pending_bytes + nbytes > self.max_pending_bytes:
                log.warning(
                    "disk writer backlog %d + %d bytes over %d; segment %s dropped",
                    self._pending_bytes, nbytes, self.max_pending_bytes, record.key,
                )  # fmt: skip
                return False
            self._jobs.append(_Job(record, arrays, dtypes, meta, on_done, nbytes))
            self._pending_bytes += nbytes
            self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job is written; False if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    log.warning("disk writer flush timed out with %d jobs left", len(self._jobs))
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, finish what is queued, and stop the thread. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            self._busy = True
            return self._jobs.popleft()

    def _run(self) -> None:
        while (job := self._next_job()) is not None:
            result: int | None
            try:
                result = self.store.put(job.record, job.arrays, job.dtypes, job.meta)
            except OSError as exc:
                if exc.errno not in _DISK_OFF_ERRNOS:
                    log.exception("writing prompt-cache segment %s failed", job.record.key)
                else:
                    self._disk_off(exc)
                result = None
            except Exception:  # a failed write must not kill the writer
                log.exception("writing prompt-cache segment %s failed", job.record.key)
                result = None
            else:
                self._disk_on()
            self._finish(job, result)

    @property
    def disk_off(self) -> bool:
        """Whether the disk tier is off now (its directory refused a write)."""
        with self._cond:
            return self._off_until is not None and time.monotonic() < self._off_until

    def _disk_off(self, exc: OSError) -> None:
        with self._cond:
            first = self._off_until is None
            self._off_until = time.monotonic() + DISK_RETRY_S
            dropped = list(self._jobs)
            self._jobs.clear()  # they would fail the same way
        if first:
            log.warning(
                "prompt cache: the disk tier is off (%s: %s); requests go on with the RAM "
                "tier only; retrying in %.0fs", type(exc).__name__, exc, DISK_RETRY_S,
            )  # fmt: skip
        for job in dropped:
            self._finish(job, None, busy=True)

    def _disk_on(self) -> None:
        with self._cond:
            was_off, self._off_until = self._off_until is not None, None
        if was_off:
            log.info("prompt cache: the disk tier is on again")

    def _finish(self, job: _Job, result: int | None, busy: bool = False) -> None:
        """Report a job; `busy`: another job is still being written (do not clear the flag)."""
        if job.on_done is not None:
            try:
                job.on_done(job.record, result)
            except Exception:
                log.exception("on_done callback for segment %s failed", job.record.key)
        with self._cond:
            self._pending_bytes -= job.nbytes
            self._busy = busy
            self._cond.notify_all()
