"""Disk faults of the prompt cache's disk tier: kills mid-replace, dead writers' temp
files, and a directory that refuses writes (read-only, full)."""

from __future__ import annotations

import errno
import logging
import os
import queue
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mlx_textgen.cache import store as store_mod
from mlx_textgen.cache.budgeted import BudgetedStore
from mlx_textgen.cache.store import DiskStore
from mlx_textgen.cache.writer import DiskWriter
from tests.unit.test_cache_store import BIG, FP, assert_same, segment


def test_a_replace_killed_midway_keeps_the_old_file_whole(tmp_path: Path, monkeypatch) -> None:
    store = BudgetedStore(tmp_path, BIG, queue.SimpleQueue())
    record, arrays, dtypes = segment(4, tokens=8)
    store.put(record, arrays, dtypes)
    shorter = {k: (v[:, :, 3:] if v.ndim == 4 else v) for k, v in arrays.items()}
    new_record = replace(record, tokens=record.tokens[3:],
                                 nbytes=sum(a.nbytes for a in shorter.values()))

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt  # the process dies between the temp file and the rename

    monkeypatch.setattr(store_mod.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.put(new_record, shorter, dtypes)
    monkeypatch.undo()
    got = DiskStore(tmp_path, BIG).get(FP, record.key)
    assert got is not None and got[0] == record  # the old entry, whole
    assert_same(got[1], arrays)
    assert store.put(new_record, shorter, dtypes) > 0  # and the replace then goes through
    assert DiskStore(tmp_path, BIG).get(FP, record.key)[0] == new_record


def test_temp_files_of_dead_writers_go_at_start(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, BIG)
    record, arrays, dtypes = segment(0)
    store.put(record, arrays, dtypes)
    shard = store.path_for(FP, record.key).parent
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_tmp = shard / f".{record.key}.{int(dead.stdout)}.abcd1234{store_mod.TEMP_SUFFIX}"
    live_tmp = shard / f".{record.key}.{os.getppid()}.abcd1234{store_mod.TEMP_SUFFIX}"
    dead_tmp.write_bytes(b"half a segment")
    live_tmp.write_bytes(b"being written")
    assert DiskStore(tmp_path, BIG).scan() == [record]
    assert not dead_tmp.exists()  # young, but its writer is gone
    assert live_tmp.exists()  # a live process may still rename it


class _RefusingStore(DiskStore):
    """A store whose directory refuses writes until `heal()` (an injected fault)."""

    def __init__(self, root: Path, err: int) -> None:
        super().__init__(root, BIG)
        self.err: int | None = err
        self.attempts = 0

    def _write_atomic(self, path: Path, parts: list) -> None:
        self.attempts += 1
        if self.err is not None:
            raise OSError(self.err, os.strerror(self.err))
        super()._write_atomic(path, parts)


@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_a_refusing_directory_turns_the_disk_tier_off_and_says_so_once(
    tmp_path: Path, caplog, monkeypatch, err: int
) -> None:
    store = _RefusingStore(tmp_path, err)
    writer = DiskWriter(store)
    results: list[int | None] = []
    with caplog.at_level(logging.INFO, logger="mlx_textgen.cache"):
        for n in range(6):
            rec, arrays, dtypes = segment(n)
            writer.submit(rec, arrays, dtypes, on_done=lambda r, s: results.append(s))
            writer.flush(timeout=10)
        assert writer.disk_off and store.attempts == 1  # no write tried while off
        offs = [r for r in caplog.records if "disk tier is off" in r.getMessage()]
        assert len(offs) == 1 and offs[0].levelno == logging.WARNING
        assert not any(r.exc_info for r in caplog.records)  # no traceback per segment
        assert results == [None]  # the rest were declined at submit: never pinned

        store.err = None  # space freed / remounted: after the retry time it writes again
        monkeypatch.setattr(writer, "_off_until", 0.0)
        rec, arrays, dtypes = segment(7)
        assert writer.submit(rec, arrays, dtypes, on_done=lambda r, s: results.append(s))
        writer.flush(timeout=10)
    assert results[-1] and not writer.disk_off
    assert any("disk tier is on again" in r.getMessage() for r in caplog.records)
    writer.close(timeout=10)


def test_other_write_errors_keep_the_disk_tier_on(tmp_path: Path) -> None:
    store = _RefusingStore(tmp_path, errno.EIO)
    writer = DiskWriter(store)
    for n in range(2):
        rec, arrays, dtypes = segment(n)
        assert writer.submit(rec, arrays, dtypes)
        writer.flush(timeout=10)
    assert not writer.disk_off and store.attempts == 2
    writer.close(timeout=10)


class _FillingFile:
    """A file on a disk that fills up after `room` bytes: a write past it raises ENOSPC
    (or, `at_fsync`, the delayed allocation fails when the data is flushed)."""

    def __init__(self, f, room: int, at_fsync: bool) -> None:
        self._f, self._room, self._at_fsync = f, room, at_fsync

    def write(self, data) -> int:
        if not self._at_fsync and len(data) > self._room:
            written = self._f.write(memoryview(data)[: self._room])  # a partial write first
            self._room = 0
            if written:
                return written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


@pytest.mark.parametrize("at_fsync", [False, True], ids=["write", "fsync"])
def test_a_disk_that_fills_mid_write_leaves_no_partial_file_and_keeps_what_was_whole(
    tmp_path: Path, caplog, monkeypatch, at_fsync: bool
) -> None:
    store = DiskStore(tmp_path, BIG)
    writer = DiskWriter(store)
    kept, arrays, dtypes = segment(0)
    assert writer.submit(kept, arrays, dtypes)
    writer.flush(timeout=10)
    real_fdopen, real_fsync = os.fdopen, os.fsync
    monkeypatch.setattr(store_mod.os, "fdopen",
                        lambda fd, *a, **k: _FillingFile(real_fdopen(fd, *a, **k), 64, at_fsync))

    def full_fsync(fd: int) -> None:
        if at_fsync and not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "fsync", full_fsync)
    results: list[int | None] = []
    with caplog.at_level(logging.INFO, logger="mlx_textgen.cache"):
        for n in range(1, 5):
            rec, arrays_n, dtypes_n = segment(n)
            writer.submit(rec, arrays_n, dtypes_n, on_done=lambda r, s: results.append(s))
            writer.flush(timeout=10)
    assert writer.disk_off and results == [None]  # the rest declined while off
    offs = [r for r in caplog.records if "disk tier is off" in r.getMessage()]
    assert len(offs) == 1 and "No space left" in offs[0].getMessage()
    assert not list(tmp_path.rglob(f"*{store_mod.TEMP_SUFFIX}"))  # the half file is gone
    monkeypatch.undo()
    assert DiskStore(tmp_path, BIG).scan() == [kept]
    got = DiskStore(tmp_path, BIG).get(FP, kept.key)
    assert got is not None and got[0] == kept
    assert_same(got[1], arrays)
    writer.close(timeout=10)
