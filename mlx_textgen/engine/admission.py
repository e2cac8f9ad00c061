"""Who gets capacity that frees up while clients are being turned away (503).

Without a rule, a slot that frees goes to whichever request arrives first after it: a
client retrying on a 503 competes with every other retry and every newcomer, and one was
refused 40 times in a row. The rule here is a line of refused clients, oldest refusal
first: while clients wait in it, a request gets in only if the free sequences exceed
what the clients ahead of it would take. A client leaves the line when it gets in, or
when it has not retried for `hold_s` (it gave up). Pure Python, no MLX.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

HOLD_S = 5.0  # a refused client keeps its place this long after its last try (Retry-After: 1)


class AdmissionLine:
    """The line of refused clients of one engine; `admit` decides for each new request."""

    def __init__(
        self, hold_s: float = HOLD_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_s = hold_s
        self._clock = clock
        # client -> (its last try, the sequences it asked for), oldest refusal first
        self._line: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._line)

    def admit(self, client: str | None, needed: int, free: int) -> bool:
        """Whether a request of `client` for `needed` sequences gets in with `free`
        sequences free; a refused client takes (or keeps) its place in the line. A request
        without a client (None) is never refused on account of the line, only for room."""
        now = self._clock()
        self._expire(now)
        ahead = 0
        for other, (_, size) in self._line.items():
            if other == client:
                break
            ahead += size
        if client is None:
            ahead = 0
        if needed + ahead <= free:
            self._line.pop(client, None)
            return True
        if client is not None:
            self._line[client] = (now, needed)  # a client already in line keeps its place
        return False

    def _expire(self, now: float) -> None:
        for client in [c for c, (last, _) in self._line.items() if now - last > self.hold_s]:
            del self._line[client]
