"""Commands for the MLX thread from other threads, taken a burst at a time.

An idle engine handed a request waits a moment for others sent with it (a burst of
clients, or n prompts sent as separate requests): a burst taken together is prefilled as
one batch instead of its first request alone and the rest joining it a step later.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

# After each request that reached an idle engine, wait this long for another, and at most
# BURST_MAX_S in all: a lone request pays BURST_QUIET_S of time to first token.
BURST_QUIET_S = 0.002
BURST_MAX_S = 0.008

Command = tuple[str, Any]  # ("add", Request) | ("abort", id) | ("call", (fn, future)) | ("stop", None)


class Inbox:
    """A thread-safe queue of commands; `take` hands the MLX thread what is waiting."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Command] = queue.SimpleQueue()

    def put(self, kind: str, arg: Any) -> None:
        self._queue.put((kind, arg))

    def take(self, block: bool, timeout: float | None = None) -> Iterator[Command]:
        """Every waiting command. With `block` (the engine is idle), wait for the first (at
        most `timeout` seconds, if given), and if it is a request, for the rest of its burst."""
        burst_end: float | None = None
        while True:
            try:
                if burst_end is None:
                    cmd = self._queue.get(block=block, timeout=timeout if block else None)
                else:
                    left = min(BURST_QUIET_S, burst_end - time.monotonic())
                    if left <= 0:
                        return
                    cmd = self._queue.get(timeout=left)
            except queue.Empty:
                return
            if block and burst_end is None and cmd[0] == "add":
                burst_end = time.monotonic() + BURST_MAX_S
            block = False
            yield cmd
