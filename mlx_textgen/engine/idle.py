"""Memory back to the system once the engine has gone idle after work.

A burst leaves the engine process at its peak resident size: MLX keeps freed buffers in
its cache for reuse, and what it does free goes to glibc's heap, which keeps the pages
(measured: 0.75 GB before a burst of 32 prompts, 3.5 GB after it and still 3.5 GB idle,
with MLX's active memory at 1.0 GB). Releasing both costs a fresh allocation on the next
request, so it happens only after a quiet moment, never between steps under load.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import time

import mlx.core as mx

log = logging.getLogger("mlx_textgen.engine")

IDLE_RELEASE_S = 1.0  # quiet time after the last request before memory is given back


def rss_bytes() -> int:
    """This process's resident set (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _trim_heap() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class IdleRelease:
    """Tracks whether work happened since the last release; the loop waits `wait_s()` for
    a command when idle and calls `release()` if none came."""

    def __init__(self, after_s: float = IDLE_RELEASE_S) -> None:
        self.after_s = after_s
        self._owed = False
        self.releases = 0

    def worked(self) -> None:
        """Requests ran: memory may have grown, a release is owed once idle."""
        self._owed = True

    def wait_s(self) -> float | None:
        """How long an idle loop waits for a command before releasing (None: for ever)."""
        return self.after_s if self._owed else None

    def release(self) -> None:
        """Give MLX's buffer cache and glibc's free heap pages back to the system."""
        self._owed = False
        began, before = time.perf_counter(), rss_bytes()
        mx.clear_cache()
        gc.collect()
        _trim_heap()
        self.releases += 1
        after = rss_bytes()
        log.debug("idle: released %.0f MB in %.3fs (resident now %.0f MB)",
                  (before - after) / 2**20, time.perf_counter() - began, after / 2**20)  # fmt: skip
