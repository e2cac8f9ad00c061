"""The engine's inbox: an idle engine takes a burst of requests together."""

from __future__ import annotations

import time

from mlx_textgen.engine import inbox
from mlx_textgen.engine.inbox import Inbox


def test_waiting_commands_come_in_order_without_blocking():
    box = Inbox()
    box.put("add", 1)
    box.put("abort", "x")
    assert list(box.take(block=False)) == [("add", 1), ("abort", "x")]
    assert list(box.take(block=False)) == []


def test_an_idle_engine_takes_the_rest_of_a_burst(monkeypatch):
    monkeypatch.setattr(inbox, "BURST_QUIET_S", 0.05)
    monkeypatch.setattr(inbox, "BURST_MAX_S", 5.0)
    box = Inbox()
    box.put("add", 1)
    taking = box.take(block=True)
    assert next(taking) == ("add", 1)
    box.put("add", 2)  # sent while the engine waits for the rest of the burst
    began = time.monotonic()
    assert list(taking) == [("add", 2)]
    assert time.monotonic() - began < 1.0  # the burst ends one quiet spell after its last request


def test_no_wait_after_an_admin_call_or_past_the_cap(monkeypatch):
    monkeypatch.setattr(inbox, "BURST_QUIET_S", 5.0)
    box = Inbox()
    box.put("call", None)
    began = time.monotonic()
    assert list(box.take(block=True)) == [("call", None)]
    monkeypatch.setattr(inbox, "BURST_MAX_S", 0.0)
    box.put("add", 1)
    assert list(box.take(block=True)) == [("add", 1)]
    assert time.monotonic() - began < 1.0
