"""The admission line: capacity freed under load goes to the client refused longest ago."""

from __future__ import annotations

from mlx_textgen.engine.admission import AdmissionLine


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_with_nobody_waiting_room_is_the_only_rule():
    line = AdmissionLine(clock=Clock())
    assert line.admit("a", needed=2, free=2)
    assert not line.admit("a", needed=3, free=2)
    assert len(line) == 1


def test_a_freed_slot_goes_to_the_longest_refused_client_not_a_newcomer():
    line = AdmissionLine(clock=Clock())
    assert not line.admit("a", 1, free=0)
    assert not line.admit("b", 1, free=0)
    assert not line.admit("c", 1, free=1)  # a newcomer: a and b are ahead of it
    assert not line.admit("b", 1, free=1)  # b retries first, but a was refused before it
    assert line.admit("a", 1, free=1)
    assert line.admit("b", 1, free=1)  # a is in: b is at the front now
    assert not line.admit("d", 1, free=1)  # c still waits
    assert line.admit("c", 1, free=1)
    assert len(line) == 1  # d


def test_room_for_everyone_ahead_lets_a_newcomer_in_too():
    line = AdmissionLine(clock=Clock())
    assert not line.admit("a", 2, free=1)
    assert line.admit("b", 1, free=3)  # a's 2 plus b's 1 fit
    assert line.admit("a", 2, free=2)


def test_a_client_that_gives_up_loses_its_place():
    clock = Clock()
    line = AdmissionLine(hold_s=5.0, clock=clock)
    assert not line.admit("a", 1, free=0)
    clock.now = 3.0
    assert not line.admit("b", 1, free=1)  # a retried 3 s ago at most: still ahead
    clock.now = 8.5  # a's last try was 8.5 s ago; b's 5.5 s ago: both gone
    assert len(line) == 0
    assert line.admit("c", 1, free=1)


def test_requests_without_a_client_are_only_sized():
    line = AdmissionLine(clock=Clock())
    assert not line.admit("a", 1, free=0)
    assert line.admit(None, 1, free=1)
    assert not line.admit(None, 1, free=0) and len(line) == 1
