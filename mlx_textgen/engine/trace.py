"""An optional record of every engine step, to see where a wave of requests spends its time.

Set ``MLX_TEXTGEN_STEP_TRACE`` to a file path and the engine appends JSON lines to it: one
per loop iteration (when it began, how long it waited for work, each phase's seconds, how
many sequences ran) and one per finished request (when the HTTP process made it, when the
engine took it, its first token and its end). Times are ``time.monotonic``, one clock for
every process of the machine (and the clock of ``Request.arrival_time``). Records are
buffered and written only when the engine goes idle or stops, so a recorded step costs a
small dict.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV = "MLX_TEXTGEN_STEP_TRACE"
PHASES = ("admit", "decode", "emit", "deferred", "prefill", "commit")  # "emit" is inside "decode"


class StepTrace:
    """Collects step and request records; a disabled trace (no path) does nothing."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._rows: list[dict[str, Any]] = []
        self._step: dict[str, Any] | None = None
        self._taken: dict[str, float] = {}  # request id -> when the engine took it

    @classmethod
    def from_env(cls) -> StepTrace:
        return cls(os.environ.get(ENV) or None)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def begin(self, waited_since: float, adds: int) -> None:
        """A loop iteration starts: it waited for commands from `waited_since`."""
        if self.path is None:
            return
        now = time.monotonic()
        self._step = {"t": now, "wait": now - waited_since, "adds": adds}

    def phase(self, name: str, seconds: float) -> None:
        if self._step is not None:
            self._step[name] = self._step.get(name, 0.0) + seconds

    def end(self, **counts: int) -> None:
        """The iteration is over; `counts`: sequences running, waiting, joined, ..."""
        if self._step is None:
            return
        step, self._step = self._step, None
        step["dur"] = time.monotonic() - step["t"]
        step.update(counts)
        self._rows.append(step)

    def taken(self, request_id: str) -> None:
        """The engine took a request off its pipe."""
        if self.path is not None:
            self._taken[request_id] = time.monotonic()

    def request(self, request_id: str, arrival: float, first: float | None, tokens: int) -> None:
        """A request ended (finished, aborted or failed) now."""
        if self.path is not None:
            self._rows.append({
                "req": request_id, "arrival": arrival, "taken": self._taken.pop(request_id, None),
                "first": first, "end": time.monotonic(), "tokens": tokens,
            })

    def flush(self) -> None:
        """Write what was recorded (the engine calls this when it goes idle)."""
        if self.path is None or not self._rows:
            return
        rows, self._rows = self._rows, []
        with self.path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
