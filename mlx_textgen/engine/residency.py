"""Which models are resident, and which one to unload to make room: pure bookkeeping.

A `Slot` is one configured model's place in the registry; `Residency` answers "does this
model fit now?", "whom may I unload?" and "could it ever fit?". Nothing here awaits or
touches a process, so the policy is tested on plain objects (tests/unit/test_residency.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mlx_textgen.config import ModelConfig


class State(str, Enum):
    UNLOADED = "unloaded"
    QUEUED = "queued"  # a load is about to start
    PREPARING = "preparing"  # its process resolves the model, then it waits for room
    LOADING = "loading"  # room reserved (count and memory), weights loading
    LOADED = "loaded"
    UNLOADING = "unloading"  # its process is exiting; still holds its memory


# Resolving a model holds no place: a model that can't be found fails without having
# unloaded another to make room for it.
HOLDS_PLACE = (State.LOADING, State.LOADED, State.UNLOADING)


@dataclass(eq=False)
class Slot:
    """One configured model: its state, who uses it, what it costs."""

    config: ModelConfig
    state: State = State.UNLOADED
    leases: int = 0  # requests holding it, from arrival to the end of their response
    waiters: int = 0  # requests waiting for it to load
    draining: bool = False  # another model waits for room: take no new requests
    drained_for: Slot | None = None
    last_used: float = field(default_factory=time.monotonic)
    footprint: int = 0  # bytes: estimated when prepared, measured once loaded
    reserved: bool = False  # its footprint counts against the budget
    engine: Any = None  # the Engine while loaded
    info: Any = None  # its ModelInfo (tokenizer, context length) while loaded
    created: int = 0  # when it was first loaded (unix time), for /v1/models
    load_task: Any = None
    loads: int = 0
    crashes: int = 0  # times its engine process exited on its own
    last_error: str | None = None

    @property
    def name(self) -> str:
        return self.config.resolved_name()

    @property
    def pinned(self) -> bool:
        return self.config.pin

    @property
    def idle(self) -> bool:
        """Nobody holds it and nobody waits for it (a draining model's waiters don't count:
        they will reload it)."""
        return self.leases == 0 and (self.waiters == 0 or self.draining)


@dataclass
class Residency:
    """The limits: how many models at once and how many bytes (None: no memory budget)."""

    max_models: int
    budget_bytes: int | None

    def fits(self, slots: list[Slot], slot: Slot, with_memory: bool) -> bool:
        """Whether `slot` fits beside the others holding a place (`with_memory`: and its
        footprint beside the others' reserved ones)."""
        others = [s for s in slots if s is not slot and s.state in HOLDS_PLACE]
        if len(others) + 1 > self.max_models:
            return False
        if not with_memory or self.budget_bytes is None:
            return True
        used = sum(s.footprint for s in others if s.reserved)
        return used + slot.footprint <= self.budget_bytes

    def hopeless(self, slots: list[Slot], slot: Slot, with_memory: bool) -> bool:
        """Whether `slot` could not fit even with every unpinned other model unloaded."""
        stay = [s for s in slots if s is not slot and s.pinned and s.state in HOLDS_PLACE]
        if len(stay) + 1 > self.max_models:
            return True
        if not with_memory or self.budget_bytes is None:
            return False
        return sum(s.footprint for s in stay) + slot.footprint > self.budget_bytes

    @staticmethod
    def victim(slots: list[Slot], slot: Slot) -> Slot | None:
        """The least recently used loaded model that may go now: idle and unpinned."""
        idle = [s for s in slots if s is not slot and s.state == State.LOADED
                and s.idle and not s.pinned]  # fmt: skip
        return min(idle, key=lambda s: s.last_used, default=None)

    @staticmethod
    def to_drain(slots: list[Slot], slot: Slot) -> Slot | None:
        """A busy model to stop admitting new requests, so that it empties and `slot` gets
        its place (without this a steady stream for it would starve `slot`). None when one
        already drains."""
        if any(s.draining for s in slots):
            return None
        busy = [s for s in slots if s is not slot and s.state == State.LOADED and not s.pinned]
        return min(busy, key=lambda s: s.last_used, default=None)
