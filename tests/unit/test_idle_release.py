"""An engine gone idle after work gives memory back: MLX's buffer cache and the C heap."""

from __future__ import annotations

import time

import mlx.core as mx

from mlx_textgen.engine.idle import IdleRelease
from mlx_textgen.engine.inbox import Inbox


def test_an_idle_wait_with_a_timeout_ends_empty():
    box = Inbox()
    began = time.monotonic()
    assert list(box.take(block=True, timeout=0.05)) == []
    assert 0.04 <= time.monotonic() - began < 2.0
    box.put("add", 1)
    assert list(box.take(block=True, timeout=5.0)) == [("add", 1)]


def test_a_release_is_owed_only_after_work():
    idle = IdleRelease(after_s=0.5)
    assert idle.wait_s() is None  # nothing ran: block for ever
    idle.worked()
    assert idle.wait_s() == 0.5
    idle.release()
    assert idle.wait_s() is None and idle.releases == 1


def test_release_empties_mlxs_buffer_cache():
    for _ in range(3):  # freed buffers stay in MLX's cache for reuse
        mx.eval(mx.ones((1024, 1024)) * 2)
    assert mx.get_cache_memory() > 0
    IdleRelease().release()
    assert mx.get_cache_memory() == 0
