"""The residency policy on plain slots: who fits, whom to unload, when it is hopeless."""

from __future__ import annotations

from mlx_textgen.config import ModelConfig
from mlx_textgen.engine.residency import Residency, Slot, State


def slot(name: str, state: State = State.LOADED, *, used: float = 0.0, gb: float = 1.0,
         pin: bool = False, leases: int = 0) -> Slot:
    s = Slot(ModelConfig(model_id_or_path=f"/m/{name}", model_name=name, pin=pin), state=state)
    s.last_used, s.footprint, s.leases = used, int(gb * (1 << 30)), leases
    s.reserved = state in (State.LOADING, State.LOADED, State.UNLOADING)
    return s


def test_count_limit_counts_what_holds_a_place() -> None:
    a, b, new = slot("a"), slot("b", State.UNLOADING), slot("new", State.QUEUED)
    queued = slot("other", State.QUEUED)
    assert not Residency(2, None).fits([a, b, new, queued], new, with_memory=False)
    assert Residency(3, None).fits([a, b, new, queued], new, with_memory=False)


def test_memory_counts_what_holds_a_place() -> None:
    a, other, new = slot("a", gb=2), slot("o", State.LOADING, gb=3), slot("new", State.PREPARING, gb=2)
    limits = Residency(4, int(4.5 * (1 << 30)))
    assert not limits.fits([a, other, new], new, with_memory=True)
    other.state = State.PREPARING  # resolving holds nothing yet
    assert limits.fits([a, other, new], new, with_memory=True)


def test_victim_is_the_least_recently_used_idle_unpinned() -> None:
    old_busy = slot("old-busy", used=1, leases=1)
    pinned = slot("pinned", used=2, pin=True)
    idle_new, idle_old = slot("idle-new", used=9), slot("idle-old", used=5)
    new = slot("new", State.QUEUED)
    assert Residency.victim([old_busy, pinned, idle_new, idle_old, new], new) is idle_old


def test_a_model_someone_waits_for_is_not_a_victim_unless_it_drains() -> None:
    a, new = slot("a"), slot("new", State.QUEUED)
    a.waiters = 1
    assert Residency.victim([a, new], new) is None
    a.draining = True
    assert Residency.victim([a, new], new) is a


def test_drain_picks_one_busy_model_at_a_time() -> None:
    a, b, new = slot("a", used=3, leases=1), slot("b", used=1, leases=2), slot("new", State.QUEUED)
    assert Residency.to_drain([a, b, new], new) is b
    b.draining = True
    assert Residency.to_drain([a, b, new], new) is None


def test_hopeless_when_the_others_are_pinned() -> None:
    pinned, new = slot("pinned", pin=True), slot("new", State.QUEUED)
    assert Residency(1, None).hopeless([pinned, new], new, with_memory=False)
    assert not Residency(2, None).hopeless([pinned, new], new, with_memory=False)
    new.footprint = 3 << 30
    assert Residency(2, 3 << 30).hopeless([pinned, new], new, with_memory=True)
    assert not Residency(2, 4 << 30).hopeless([pinned, new], new, with_memory=True)
