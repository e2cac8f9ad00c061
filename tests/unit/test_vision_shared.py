"""Pixel arrays in shared memory (vision/shared.py): another process reads them by handle,
pinned entries are never evicted, eviction and exit unlink segments, and without room in
/dev/shm the arrays stay inline."""

from __future__ import annotations

import pickle
import subprocess
import sys
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest

from mlx_textgen.vision import shared
from mlx_textgen.vision.shared import SharedArray, SharedStore, opened

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


def _arrays(seed: int, mb: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"pixel_values": rng.standard_normal((mb * MB // 4,)).astype(np.float32),
            "image_grid_thw": np.array([[1, 4, 4]], np.int64)}  # fmt: skip


def _exists(name: str) -> bool:
    try:
        shared_memory.SharedMemory(name=name).close()
    except FileNotFoundError:
        return False
    return True


def test_another_process_reads_the_array_by_handle() -> None:
    store = SharedStore(8 * MB)
    try:
        arrays = store.put("a", 7, _arrays(0))
        handle = arrays["pixel_values"]
        assert isinstance(handle, SharedArray) and isinstance(arrays["image_grid_thw"], np.ndarray)
        assert len(pickle.dumps(arrays)) < 4096  # what crosses the pipe: the handle, not 1 MB
        code = (
            "import pickle, sys; from mlx_textgen.vision.shared import opened\n"
            "h = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
            "with opened(h) as a: print(float(a.sum()), a.shape)\n"
        )
        out = subprocess.run([sys.executable, "-W", "error", "-c", code, pickle.dumps(handle).hex()],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        expected = float(_arrays(0)["pixel_values"].sum())
        assert abs(float(out.stdout.split()[0]) - expected) < 1e-3 * max(1.0, abs(expected))
        assert "leaked" not in out.stderr  # the reader does not own (or unlink) the segment
        assert _exists(handle.segment)  # still there after the reader exited
        with opened(handle) as a:
            assert np.array_equal(a, _arrays(0)["pixel_values"])
    finally:
        store.close()
    assert not _exists(handle.segment)  # the owner unlinks at close (and at exit)


def test_pinned_entries_stay_and_the_rest_are_evicted_oldest_first() -> None:
    store = SharedStore(2 * MB + MB // 2)  # two 1 MB images fit, three do not
    try:
        a = store.put("a", 0, _arrays(1))["pixel_values"]  # pinned once by put
        store.put("b", 0, _arrays(2))
        store.unpin(["b"])
        store.put("c", 0, _arrays(3))
        store.unpin(["c"])
        # a is pinned: b, the oldest unpinned, went for c
        assert "a" in store and "b" not in store and "c" in store and _exists(a.segment)
        store.unpin(["a"])
        store.put("d", 0, _arrays(4))  # now a (least recently used) goes
        assert "a" not in store and not _exists(a.segment) and "c" in store
        assert store.get("c") is not None and store.pinned("c") == 1
    finally:
        store.close()


def test_same_key_twice_keeps_the_first_segment() -> None:
    store = SharedStore(8 * MB)
    try:
        first = store.put("a", 0, _arrays(1))
        second = store.put("a", 0, _arrays(1))
        assert first == second and store.pinned("a") == 2
    finally:
        store.close()


def test_without_room_in_dev_shm_arrays_stay_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "_room", lambda size: False)
    store = SharedStore(8 * MB)
    arrays = store.put("a", 0, _arrays(1))
    assert isinstance(arrays["pixel_values"], np.ndarray)
    with opened(arrays["pixel_values"]) as a:  # inline arrays open as themselves
        assert a is arrays["pixel_values"]
    store.close()
