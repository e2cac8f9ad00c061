"""Disk tier of the prompt cache: round trips, corruption, LRU budget, concurrency, writer."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from mlx_textgen.cache import store as store_mod
from mlx_textgen.cache.store import DiskStore, SegmentRecord
from mlx_textgen.cache.writer import DiskWriter

FP = "model-aaaa"
FP2 = "model-bbbb"
BIG = 1 << 30


def key_of(n: int) -> str:
    return hashlib.md5(str(n).encode()).hexdigest()


def segment(
    n: int, fp: str = FP, tokens: int = 8
) -> tuple[SegmentRecord, dict[str, np.ndarray], dict[str, str]]:
    """A deterministic segment: the same ``n`` always gives the same content."""
    rng = np.random.default_rng(n)
    bf16 = rng.standard_normal((1, 2, tokens, 4), dtype=np.float32).view(np.uint32) >> 16
    arrays = {
        "0.keys": rng.standard_normal((1, 2, tokens, 4)).astype(np.float16),
        "0.values": bf16.astype(np.uint16),
        "1.keys": rng.standard_normal((1, 2, tokens, 4), dtype=np.float32),
        "1.offset": np.array(tokens, dtype=np.int32),
    }
    dtypes = {"0.keys": "float16", "0.values": "bfloat16", "1.keys": "float32",
              "1.offset": "int32"}  # fmt: skip
    record = SegmentRecord(
        key=key_of(n),
        parent_key=fp if n == 0 else key_of(n - 1),
        fingerprint=fp,
        tokens=tuple(int(t) for t in rng.integers(0, 2**32 - 1, tokens)),
        nbytes=sum(a.nbytes for a in arrays.values()),
        trimmable=n % 2 == 0,
        is_boundary=n % 3 == 0,
    )
    return record, arrays, dtypes


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, arr in want.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
        np.testing.assert_array_equal(got[name], arr)


def quarantined(root: Path) -> list[str]:
    qdir = root / store_mod.QUARANTINE_DIR
    return sorted(p.name for p in qdir.iterdir()) if qdir.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    return DiskStore(tmp_path / "prompt_cache", BIG)


# -- round trips ---------------------------------------------------------------------------


def test_round_trip_preserves_record_arrays_dtypes(store: DiskStore) -> None:
    record, arrays, dtypes = segment(0)
    size = store.put(record, arrays, dtypes)
    path = store.path_for(FP, record.key)
    assert size == path.stat().st_size > record.nbytes
    assert path == store.root / FP / record.key[:2] / f"{record.key}.safetensors"
    got = store.get(FP, record.key)
    assert got is not None
    got_record, got_arrays, got_dtypes, got_meta = got
    assert got_record == record
    assert got_dtypes == dtypes and got_dtypes["0.values"] == "bfloat16"
    assert got_meta == {}
    assert_same(got_arrays, arrays)


def test_round_trip_meta_and_odd_arrays(store: DiskStore) -> None:
    arrays = {
        "empty": np.zeros((0, 3), dtype=np.float32),
        "flag": np.array([True, False]),
        "i8": np.arange(-4, 4, dtype=np.int8),
        "strided": np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2],  # not contiguous
    }
    dtypes = {"empty": "float32", "flag": "bool", "i8": "int8", "strided": "int64"}
    record = SegmentRecord(key_of(1), FP, FP, (), 0, True, False)
    meta = {"offset": "17", "kind": "KVCache"}
    store.put(record, arrays, dtypes, meta)
    got = store.get(FP, record.key)
    assert got is not None and got[0] == record and got[2] == dtypes and got[3] == meta
    assert_same(got[1], arrays)


def test_round_trip_no_arrays(store: DiskStore) -> None:
    record = SegmentRecord(key_of(2), FP, FP, (1, 2, 3), 0, False, True)
    assert store.put(record, {}, {}) > 0
    got = store.get(FP, record.key)
    assert got is not None and got[0] == record and got[1] == {}


def test_put_is_idempotent_and_touches(store: DiskStore) -> None:
    record, arrays, dtypes = segment(3)
    first = store.put(record, arrays, dtypes)
    path = store.path_for(FP, record.key)
    os.utime(path, ns=(1, 1))
    inode = path.stat().st_ino
    assert store.put(record, arrays, dtypes) == first
    assert path.stat().st_ino == inode  # not rewritten
    assert path.stat().st_mtime_ns > 1  # but counted as a use
    assert len(store.scan()) == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda r, a, d: (r, a, {**d, "0.keys": "float32"}),  # dtype map disagrees
        lambda r, a, d: (r, a, {k: v for k, v in d.items() if k != "0.keys"}),
        lambda r, a, d: (r, a, {**d, "0.values": "bfloat17"}),
        lambda r, a, d: (replace(r, key="XYZ"), a, d),
        lambda r, a, d: (replace(r, key=r.key.upper()), a, d),
        lambda r, a, d: (replace(r, fingerprint="quarantine"), a, d),
        lambda r, a, d: (replace(r, fingerprint="../up"), a, d),
        lambda r, a, d: (replace(r, tokens=(-1,)), a, d),
        lambda r, a, d: (replace(r, tokens=(2**32,)), a, d),
        lambda r, a, d: (r, {**a, "__metadata__": a["0.keys"]}, {**d, "__metadata__": "float16"}),
    ],
)
def test_put_rejects_bad_input(store: DiskStore, change) -> None:
    with pytest.raises(ValueError):
        store.put(*change(*segment(4)))
    assert store.nbytes() == 0


def test_segment_bigger_than_budget_is_not_written(tmp_path: Path) -> None:
    small = DiskStore(tmp_path, 100)
    record, arrays, dtypes = segment(5)
    assert small.put(record, arrays, dtypes) == 0
    assert small.get(FP, record.key) is None and small.nbytes() == 0


def test_crash_mid_write_leaves_no_final_file(store: DiskStore, monkeypatch) -> None:
    record, arrays, dtypes = segment(6)

    def crash(*_args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(store_mod.os, "replace", crash)
    with pytest.raises(OSError):
        store.put(record, arrays, dtypes)
    monkeypatch.undo()
    shard = store.path_for(FP, record.key).parent
    assert list(shard.iterdir()) == []  # neither the final name nor the temp file
    assert store.put(record, arrays, dtypes) > 0


# -- corruption ----------------------------------------------------------------------------


def test_missing_file_is_none(store: DiskStore) -> None:
    assert store.get(FP, key_of(7)) is None
    store.touch(FP, key_of(7))
    store.delete(FP, key_of(7))
    assert quarantined(store.root) == []


def test_truncated_file_is_quarantined(store: DiskStore, caplog) -> None:
    record, arrays, dtypes = segment(8)
    store.put(record, arrays, dtypes)
    path = store.path_for(FP, record.key)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 10)
    with caplog.at_level(logging.WARNING, logger="mlx_textgen.cache"):
        assert store.get(FP, record.key) is None
    assert not path.exists()
    assert len(quarantined(store.root)) == 1
    assert "quarantined" in caplog.text
    assert store.get(FP, record.key) is None  # now simply missing
    assert store.put(record, arrays, dtypes) > 0  # and can be written again


def test_every_flipped_byte_is_detected(store: DiskStore, monkeypatch) -> None:
    """A one-bit change anywhere in the file (header or data) never yields data."""
    monkeypatch.setattr(store_mod, "QUARANTINE_KEEP", 1)
    record, arrays, dtypes = segment(9, tokens=2)
    store.put(record, arrays, dtypes, {"note": "x"})
    path = store.path_for(FP, record.key)
    blob = path.read_bytes()
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            path.write_bytes(bytes(bad))
            assert store.get(FP, record.key) is None, f"byte {i} ^ {bit:#x} undetected"
            assert not path.exists()
    assert len(quarantined(store.root)) == 1  # trimmed to QUARANTINE_KEEP


def test_scan_reads_headers_only(store: DiskStore, monkeypatch) -> None:
    record, arrays, dtypes = segment(10)
    store.put(record, arrays, dtypes)
    path = store.path_for(FP, record.key)
    bad = bytearray(path.read_bytes())
    bad[-1] ^= 0xFF  # tensor data: only a full read can notice
    path.write_bytes(bytes(bad))

    def no_data(*_args: object, **_kw: object) -> None:
        raise AssertionError("scan loaded tensor data")

    monkeypatch.setattr(store_mod.DiskStore, "_load_arrays", staticmethod(no_data))
    assert DiskStore(store.root, BIG).scan() == [record]
    monkeypatch.undo()
    assert store.get(FP, record.key) is None and len(quarantined(store.root)) == 1


def test_files_are_standard_safetensors(store: DiskStore) -> None:
    """Written without the safetensors package, read back by it; and a file the package
    wrote (as earlier versions did) reads back through the store."""
    record, arrays, dtypes = segment(17)
    store.put(record, arrays, dtypes)
    path = store.path_for(FP, record.key)
    loaded = safetensors.numpy.load_file(str(path))
    assert loaded.keys() == arrays.keys()
    assert all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    fields = store_mod._build_metadata(record, arrays, dtypes, {})
    path.write_bytes(safetensors.numpy.save(arrays, metadata=fields))
    got = store.get(FP, record.key)
    assert got is not None and all(np.array_equal(got[1][k], arrays[k]) for k in arrays)


def test_overlapping_tensor_table_is_corrupt(store: DiskStore) -> None:
    record, arrays, dtypes = segment(18)
    store.put(record, arrays, dtypes)
    path = store.path_for(FP, record.key)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    table = json.loads(raw[8 : 8 + n])
    names = sorted(k for k in table if k != "__metadata__")
    first, second = table[names[0]], table[names[1]]
    second["data_offsets"] = first["data_offsets"]  # two tensors on the same bytes
    second["shape"], second["dtype"] = first["shape"], first["dtype"]
    body = json.dumps(table).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n :])
    assert store.get(FP, record.key) is None and len(quarantined(store.root)) == 1


def _write_raw(store: DiskStore, fp: str, key: str, data: bytes) -> Path:
    path = store.root / fp / key[:2] / f"{key}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_scan_quarantines_garbage_and_cleans_old_temp_files(store: DiskStore) -> None:
    record, arrays, dtypes = segment(11)
    store.put(record, arrays, dtypes)
    good = store.path_for(FP, record.key)
    foreign = safetensors.numpy.save({"w": np.zeros(2, np.float32)})  # no metadata
    stale = dict(store_mod._build_metadata(record, {}, {}, {}), version="999")
    files = {
        "garbage": _write_raw(store, FP, key_of(12), os.urandom(300)),
        "empty": _write_raw(store, FP, key_of(13), b""),
        "foreign": _write_raw(store, FP2, key_of(14), foreign),
        "version": _write_raw(store, FP, key_of(15), safetensors.numpy.save({}, stale)),
        "misnamed": _write_raw(store, FP, key_of(16), good.read_bytes()),  # key != name
    }
    old_tmp = good.parent / f".{record.key}.1.dead{store_mod.TEMP_SUFFIX}"
    new_tmp = good.parent / f".{record.key}.{os.getpid()}.live{store_mod.TEMP_SUFFIX}"
    old_tmp.write_bytes(b"partial")
    new_tmp.write_bytes(b"partial")
    os.utime(old_tmp, (time.time() - 2 * store_mod.TEMP_MAX_AGE_S,) * 2)
    notes = store.root / FP / "notes.txt"
    notes.write_text("not ours")

    assert DiskStore(store.root, BIG).scan() == [record]
    assert all(not p.exists() for p in files.values())
    assert len(quarantined(store.root)) == len(files)
    assert not old_tmp.exists() and new_tmp.exists()  # a live writer's temp is left alone
    assert notes.exists() and good.exists()


# -- index rebuild, LRU, budget ------------------------------------------------------------


def test_scan_after_restart_lists_records_lru_first(store: DiskStore) -> None:
    segs = [segment(n, fp=FP if n < 3 else FP2) for n in range(5)]
    for rec, arrays, dtypes in segs:
        store.put(rec, arrays, dtypes)
    store.touch(FP, segs[0][0].key)  # now the most recently used
    reopened = DiskStore(store.root, BIG)
    records = reopened.scan()
    assert records == [s[0] for s in segs[1:]] + [segs[0][0]]
    assert reopened.scan(FP2) == [segs[3][0], segs[4][0]]
    assert reopened.scan("model-none") == []
    sizes = [store.path_for(r.fingerprint, r.key).stat().st_size for r in records]
    assert reopened.nbytes() == sum(sizes)
    assert reopened.nbytes(FP2) == sum(sizes[2:4])


def test_enforce_budget_evicts_lru_and_spares_protected(tmp_path: Path) -> None:
    segs = [segment(n) for n in range(5)]
    store = DiskStore(tmp_path, BIG)
    sizes = [store.put(rec, arrays, dtypes) for rec, arrays, dtypes in segs]
    store.budget_bytes = sizes[2] + sizes[3] + 10  # room for two
    for n in (3, 0, 4, 1, 2):  # use order: 3 is least recent, 2 most recent
        store.touch(FP, segs[n][0].key)
    assert store.nbytes() == sum(sizes)  # put never evicts by itself
    removed = store.enforce_budget(protected={segs[3][0].key})
    assert removed == [(FP, segs[n][0].key) for n in (0, 4, 1)]
    assert {r.key for r in store.scan()} == {segs[3][0].key, segs[2][0].key}
    assert store.enforce_budget() == []  # already under budget


def test_enforce_budget_may_stay_over_when_all_protected(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, 10_000)
    keys = set()
    for n in range(3):
        rec, arrays, dtypes = segment(n, tokens=64)
        store.put(rec, arrays, dtypes)
        keys.add(rec.key)
    assert store.nbytes() > 10_000
    assert store.enforce_budget(protected=keys) == []
    assert len(store.scan()) == 3


def test_delete_and_delete_all(store: DiskStore) -> None:
    for n in range(4):
        store.put(*segment(n, fp=FP if n < 3 else FP2))
    store.delete(FP, key_of(0))
    assert store.get(FP, key_of(0)) is None
    assert store.delete_all(FP) == 2
    assert store.scan(FP) == [] and not (store.root / FP).exists()
    assert [r.key for r in store.scan()] == [key_of(3)]
    _write_raw(store, FP2, key_of(9), b"junk")
    store.get(FP2, key_of(9))  # quarantined
    assert store.delete_all() == 1
    assert store.nbytes() == 0 and quarantined(store.root) == []
    store.put(*segment(5))  # directories come back on demand
    assert len(store.scan()) == 1


# -- concurrency ---------------------------------------------------------------------------


def test_two_stores_in_threads_never_see_a_partial_file(tmp_path: Path) -> None:
    writer_store, reader_store = DiskStore(tmp_path, BIG), DiskStore(tmp_path, BIG)
    segs = [segment(n) for n in range(4)]
    stop = threading.Event()
    seen: list[int] = []

    def churn() -> None:
        while not stop.is_set():
            for rec, arrays, dtypes in segs:
                writer_store.put(rec, arrays, dtypes)
            writer_store.enforce_budget()
            writer_store.delete(FP, segs[0][0].key)
            writer_store.delete_all(FP)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            for rec, arrays, _ in segs:
                got = reader_store.get(FP, rec.key)
                if got is not None:
                    assert got[0] == rec
                    assert_same(got[1], arrays)
                    seen.append(1)
            reader_store.scan()
    finally:
        stop.set()
        thread.join()
    assert quarantined(tmp_path) == []
    assert seen  # the reader did overlap with the writer


def _child_process(root: str, barrier: object, offset: int, spans: object) -> None:
    """One "server": write shared and private keys twice over, evicting and deleting."""
    store = DiskStore(Path(root), 40_000)
    barrier.wait(timeout=60)  # type: ignore[attr-defined]
    began = time.time()
    for _ in range(2):
        for n in [*range(12), *range(100 + offset, 112 + offset)]:
            store.put(*segment(n, tokens=32))
            if n % 4 == 0:
                store.enforce_budget()
            if n % 5 == 0:
                store.delete(FP, key_of(n + 1))
    for record in store.scan():  # the other process may evict between scan and get
        got = store.get(record.fingerprint, record.key)
        assert got is None or got[0] == record
    spans.put((began, time.time()))  # type: ignore[attr-defined]


def test_two_processes_never_corrupt_the_cache(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, spans = ctx.Barrier(2), ctx.Queue()
    child = ctx.Process(target=_child_process, args=(str(tmp_path), barrier, 100, spans))
    child.start()
    _child_process(str(tmp_path), barrier, 0, spans)
    child.join(timeout=60)
    assert child.exitcode == 0
    (a0, a1), (b0, b1) = spans.get(timeout=5), spans.get(timeout=5)
    assert a0 < b1 and b0 < a1  # the two processes really ran at the same time
    store = DiskStore(tmp_path, 40_000)
    store.enforce_budget()
    assert 0 < store.nbytes() <= 40_000
    records = store.scan()
    assert records
    for record in records:
        n = next(n for n in [*range(12), *range(100, 112), *range(200, 212)]
                 if key_of(n) == record.key)  # fmt: skip
        want = segment(n, tokens=32)
        got = store.get(FP, record.key)
        assert got is not None and got[0] == want[0]
        assert_same(got[1], want[1])
    assert quarantined(tmp_path) == []  # neither process ever saw a bad file


# -- background writer ---------------------------------------------------------------------


class BlockingStore(DiskStore):
    """A store whose writes wait for a gate, to observe the writer mid-write."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, BIG)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.writer_threads: set[str] = set()

    def put(self, *args, **kwargs) -> int:  # type: ignore[override]
        self.writer_threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(10)
        return super().put(*args, **kwargs)


def test_writer_writes_off_thread_and_reports(tmp_path: Path) -> None:
    store = BlockingStore(tmp_path)
    writer = DiskWriter(store)
    done: list[tuple[SegmentRecord, int | None]] = []
    segs = [segment(n) for n in range(3)]
    for rec, arrays, dtypes in segs:
        assert writer.submit(rec, arrays, dtypes, on_done=lambda r, s: done.append((r, s)))
    assert store.entered.wait(5)
    assert writer.flush(timeout=0.05) is False and done == []  # submit did not wait
    store.gate.set()
    assert writer.flush(timeout=10)
    assert [r for r, _ in done] == [s[0] for s in segs]
    assert all(size == store.path_for(FP, r.key).stat().st_size for r, size in done)
    assert store.writer_threads == {"mlx_textgen-cache-writer"}
    assert writer.pending_bytes == 0
    writer.close()
    assert writer.submit(*segs[0]) is False  # closed


def test_writer_drops_over_pending_bound(tmp_path: Path, caplog) -> None:
    store = BlockingStore(tmp_path)
    rec, arrays, dtypes = segment(0)
    nbytes = sum(a.nbytes for a in arrays.values())
    writer = DiskWriter(store, max_pending_bytes=nbytes + nbytes // 2)
    assert writer.submit(rec, arrays, dtypes)
    assert store.entered.wait(5)  # still pending while being written
    with caplog.at_level(logging.WARNING, logger="mlx_textgen.cache"):
        assert writer.submit(*segment(1)) is False
    assert "dropped" in caplog.text
    store.gate.set()
    assert writer.flush(timeout=10)
    assert writer.submit(*segment(2))  # room again
    writer.close(timeout=10)
    assert {r.key for r in store.scan()} == {key_of(0), key_of(2)}


def test_idle_writer_takes_a_segment_over_the_bound(tmp_path: Path) -> None:
    store = BlockingStore(tmp_path)
    rec, arrays, dtypes = segment(0)
    writer = DiskWriter(store, max_pending_bytes=1)  # smaller than any segment
    assert writer.submit(rec, arrays, dtypes)
    assert store.entered.wait(5)
    assert writer.submit(*segment(1)) is False  # busy: the bound applies
    store.gate.set()
    writer.close(timeout=10)
    assert {r.key for r in store.scan()} == {key_of(0)}


def test_writer_survives_failed_writes(tmp_path: Path) -> None:
    writer = DiskWriter(DiskStore(tmp_path, BIG))
    results: list[int | None] = []
    rec, arrays, dtypes = segment(0)
    assert writer.submit(rec, arrays, {**dtypes, "0.keys": "int8"},  # put raises
                         on_done=lambda r, s: results.append(s))  # fmt: skip
    assert writer.submit(rec, arrays, dtypes, on_done=lambda r, s: results.append(s))
    writer.close(timeout=10)  # close drains the queue
    assert results[0] is None and results[1] > 0
