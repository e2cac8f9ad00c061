"""Disk tier of the prompt cache: one safetensors file per KV-cache segment.

Layout: ``<root>/<fingerprint>/<key[:2]>/<key>.safetensors``, where ``root`` is
``<cache_dir>/prompt_cache``. Unreadable files go to ``<root>/quarantine/``. The file
format (header fields, dtype map, checksum) is ``segment_file``'s; its names are
re-exported here.

``get`` checks the whole file; ``scan`` checks the header and the file size only, so a
restart never reads tensor data.

Several processes may share one root: files appear only by atomic rename of a complete file
(same key means same content, so the last writer wins harmlessly), and deletions take an
exclusive ``flock`` on ``<root>/.lock``. Every reader treats a file that vanished as missing.
Without ``fcntl`` (Windows) the lock is per process only: each operation still tolerates
vanished files, but two processes evicting at once may both count the same freed bytes.

This module never imports mlx: it may run on a background writer thread.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

# FORMAT_* and MAX_HEADER_BYTES are re-exported: they were defined here before the split.
from mlx_textgen.cache.segment_file import (
    FORMAT_NAME,  # noqa: F401
    FORMAT_VERSION,  # noqa: F401
    MAX_HEADER_BYTES,  # noqa: F401
    CorruptSegment,
    SegmentHeader,
    SegmentRecord,
    build_metadata,
    check_identity,
    checksum,
    file_header,
    prepare_arrays,
    read_header,
    tensor_bytes,
    tensor_views,
)

try:
    import fcntl
except ImportError:  # Windows: see the module docstring
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("mlx_textgen.cache")

SUFFIX = ".safetensors"
QUARANTINE_DIR = "quarantine"
LOCK_FILE = ".lock"
TEMP_SUFFIX = ".tmp"
# A temp file this old belongs to a writer that died; younger ones may still be in flight.
TEMP_MAX_AGE_S = 3600.0
# Quarantine is for post-mortems, not storage: keep only the newest few files.
QUARANTINE_KEEP = 8

_KEY_RE = re.compile(r"[0-9a-f]{32}")
_FINGERPRINT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The old private name of build_metadata; tests build headers with it.
_build_metadata = build_metadata


@dataclass(frozen=True)
class _Entry:
    """A segment file found on disk."""

    fingerprint: str
    key: str
    path: Path
    size: int
    mtime_ns: int


def check_key(key: str) -> None:
    """Raise ValueError unless ``key`` is a 32-char lowercase hex segment key."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ValueError(f"segment key must be 32 lowercase hex chars, got {key!r}")


def check_fingerprint(fingerprint: str) -> None:
    """Raise ValueError unless ``fingerprint`` is safe to use as a directory name."""
    ok = isinstance(fingerprint, str) and _FINGERPRINT_RE.fullmatch(fingerprint)
    if not ok or fingerprint == QUARANTINE_DIR:
        raise ValueError(f"fingerprint must match [A-Za-z0-9._-]{{1,128}}, got {fingerprint!r}")


def _fsync_dir(path: Path) -> None:
    """Make a rename or new entry in ``path`` durable (a no-op where dirs can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _writer_alive(temp_name: str) -> bool:
    """Whether the process that named this temp file (``.<key>.<pid>.<hex>.tmp``) runs."""
    parts = temp_name.split(".")
    if len(parts) != 5 or not parts[2].isdigit():
        return True  # not ours to judge: only age removes it
    pid = int(parts[2])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process, or no signals here
        return True
    return True


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    """List a directory, empty if it vanished (another process deleted it)."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


class DiskStore:
    """Segment files under one root, shared safely by threads and processes.

    ``put`` never evicts: the caller calls ``enforce_budget``. LRU order is the file mtime,
    which ``put``, ``get`` and ``touch`` set, so it survives restarts.
    """

    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = Path(root)
        self.budget_bytes = int(budget_bytes)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / LOCK_FILE
        self._thread_lock = threading.Lock()
        self._clock_lock = threading.Lock()
        self._last_ns = 0

    # -- paths, time, lock ---------------------------------------------------------------

    def path_for(self, fingerprint: str, key: str) -> Path:
        """Where the segment ``key`` of ``fingerprint`` lives (it may not exist)."""
        check_fingerprint(fingerprint)
        check_key(key)
        return self.root / fingerprint / key[:2] / f"{key}{SUFFIX}"

    def _now_ns(self) -> int:
        # Explicit, strictly increasing stamps: the kernel's file clock is coarse (ms),
        # which would make back-to-back touches tie in LRU order.
        with self._clock_lock:
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            return self._last_ns

    def _stamp(self, path: Path) -> bool:
        now = self._now_ns()
        try:
            os.utime(path, ns=(now, now))
            return True
        except FileNotFoundError:
            return False

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Exclusive across threads of this process and, with fcntl, across processes."""
        with self._thread_lock:
            if fcntl is None:
                yield
                return
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    # -- write ---------------------------------------------------------------------------

    def put(
        self,
        record: SegmentRecord,
        arrays: dict[str, np.ndarray],
        dtypes: dict[str, str],
        meta: dict[str, str] | None = None,
        *,
        replace: bool = False,
    ) -> int:
        """Write one segment atomically; return its size on disk.

        Idempotent: if a sound file for the key exists it is only touched, unless `replace`
        (then the new file is renamed over it: a kill leaves the old or the new one, whole).
        Returns 0 (and logs) when the file would exceed the whole budget. Raises ValueError
        on bad input.
        """
        path = self.path_for(record.fingerprint, record.key)
        arrays = prepare_arrays(arrays, dtypes)
        existing = None if replace else self._existing_size(path, record)
        if existing is not None:
            return existing
        fields = build_metadata(record, arrays, dtypes, meta or {})
        if not self._fits(record.key, int(fields["data_nbytes"])):
            return 0
        parts = [file_header(fields, arrays), *tensor_bytes(arrays)]
        size = sum(len(p) for p in parts)
        if not self._fits(record.key, size):
            return 0
        try:
            self._write_atomic(path, parts)
        except FileNotFoundError:
            # delete_all in another process removed the directory under us: once more.
            self._write_atomic(path, parts)
        return size

    def _fits(self, key: str, nbytes: int) -> bool:
        if nbytes <= self.budget_bytes:
            return True
        log.info("segment %s (%d bytes) exceeds the disk budget; not written", key, nbytes)
        return False

    def _existing_size(self, path: Path, record: SegmentRecord) -> int | None:
        """Size of a sound existing file for this key (touched), else None."""
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                check_identity(read_header(f, st.st_size), record.fingerprint, record.key)
        except FileNotFoundError:
            return None
        except CorruptSegment as exc:
            self._quarantine(path, str(exc), st)
            return None
        return st.st_size if self._stamp(path) else None

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and its fingerprint dir, syncing each new entry."""
        for d in (directory.parent, directory):
            if not d.is_dir():
                d.mkdir(exist_ok=True)
                _fsync_dir(d.parent)

    def _write_atomic(self, path: Path, parts: list[bytes | memoryview]) -> None:
        """temp file in the same dir -> fsync -> rename -> fsync dir."""
        directory = path.parent
        self._make_dirs(directory)
        tmp = directory / f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o644)  # fmt: skip
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                for part in parts:  # large writes release the GIL
                    view = memoryview(part)
                    while view:
                        view = view[f.write(view) :]
                os.fsync(f.fileno())
            now = self._now_ns()
            os.utime(tmp, ns=(now, now))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(directory)

    # -- read ----------------------------------------------------------------------------

    def get(
        self, fingerprint: str, key: str
    ) -> tuple[SegmentRecord, dict[str, np.ndarray], dict[str, str], dict[str, str]] | None:
        """Load and verify one segment: ``(record, arrays, dtypes, meta)``, or None.

        None when the file is missing; a file that fails any check is quarantined (logged)
        and None is returned. A successful get counts as a use for LRU.
        """
        path = self.path_for(fingerprint, key)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                header = read_header(f, st.st_size)
                check_identity(header, fingerprint, key)
                arrays = self._load_arrays(f, st.st_size, header)
        except FileNotFoundError:
            return None
        except CorruptSegment as exc:
            self._quarantine(path, str(exc), st)
            return None
        except OSError as exc:  # an I/O error is not proof of corruption: leave the file
            log.warning("cannot read segment %s: %s", path, exc)
            return None
        self._stamp(path)
        return header.record, arrays, dict(header.dtypes), dict(header.meta)

    @staticmethod
    def _load_arrays(f: BinaryIO, size: int, header: SegmentHeader) -> dict[str, np.ndarray]:
        """One read into one buffer (no copy of the tensors after it), then the checksum:
        both release the GIL."""
        buf = np.empty(size, dtype=np.uint8)
        f.seek(0)
        got = 0
        while got < size and (n := f.readinto(memoryview(buf)[got:])):
            got += n
        if got != size or f.read(1):
            raise CorruptSegment("file changed size while reading")
        arrays = tensor_views(buf, header)
        if checksum(header.fields, arrays) != header.fields["checksum"]:
            raise CorruptSegment("checksum mismatch")
        return arrays

    def touch(self, fingerprint: str, key: str) -> None:
        """Record a use of the segment for LRU; a missing file is ignored."""
        self._stamp(self.path_for(fingerprint, key))

    # -- listing -------------------------------------------------------------------------

    def _fingerprint_dirs(self, fingerprint: str | None) -> list[Path]:
        if fingerprint is not None:
            check_fingerprint(fingerprint)
            return [self.root / fingerprint]
        return [
            Path(e.path)
            for e in _scandir(self.root)
            if e.name != QUARANTINE_DIR and _FINGERPRINT_RE.fullmatch(e.name) and e.is_dir()
        ]

    def _entries(self, fingerprint: str | None, clean_temp: bool = False) -> Iterator[_Entry]:
        """Every segment-named file; files that vanish mid-listing are skipped."""
        for fp_dir in self._fingerprint_dirs(fingerprint):
            for shard in _scandir(fp_dir):
                for e in _scandir(Path(shard.path)):
                    if clean_temp and e.name.endswith(TEMP_SUFFIX):
                        self._remove_stale_temp(Path(e.path))
                        continue
                    if not e.name.endswith(SUFFIX) or not _KEY_RE.fullmatch(e.name[:-len(SUFFIX)]):
                        continue
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    yield _Entry(fp_dir.name, e.name[: -len(SUFFIX)], Path(e.path),
                                 st.st_size, st.st_mtime_ns)  # fmt: skip

    @staticmethod
    def _remove_stale_temp(path: Path) -> None:
        """A temp file whose writer is gone (its pid, in the name, is not running) or that
        is old; one a live writer (this process or another) is still writing stays."""
        try:
            old = time.time() - path.stat().st_mtime > TEMP_MAX_AGE_S
            if old or not _writer_alive(path.name):
                path.unlink()
                log.info("removed a temp file left by a dead writer: %s", path)
        except FileNotFoundError:
            pass

    def scan(self, fingerprint: str | None = None) -> list[SegmentRecord]:
        """Records of every sound segment file, least recently used first.

        Reads headers only. Unreadable files are quarantined; temp files left by dead
        writers (older than TEMP_MAX_AGE_S) are removed.
        """
        found: list[tuple[int, SegmentRecord]] = []
        for entry in self._entries(fingerprint, clean_temp=True):
            record = self._scan_one(entry)
            if record is not None:
                found.append((entry.mtime_ns, record))
        found.sort(key=lambda item: (item[0], item[1].key))
        return [record for _, record in found]

    def _scan_one(self, entry: _Entry) -> SegmentRecord | None:
        try:
            with open(entry.path, "rb") as f:
                st = os.fstat(f.fileno())
                header = read_header(f, st.st_size)
                check_identity(header, entry.fingerprint, entry.key)
                if entry.path.parent.name != entry.key[:2]:
                    raise CorruptSegment("file is in the wrong shard directory")
        except FileNotFoundError:
            return None
        except CorruptSegment as exc:
            self._quarantine(entry.path, str(exc), st)
            return None
        return header.record

    def nbytes(self, fingerprint: str | None = None) -> int:
        """Bytes on disk used by segment files (of one fingerprint, or all)."""
        return sum(e.size for e in self._entries(fingerprint))

    # -- removal -------------------------------------------------------------------------

    def delete(self, fingerprint: str, key: str) -> None:
        """Remove one segment; a missing file is fine."""
        path = self.path_for(fingerprint, key)
        with self._exclusive():
            path.unlink(missing_ok=True)

    def delete_all(self, fingerprint: str | None = None) -> int:
        """Remove every segment of ``fingerprint`` (or of all, plus the quarantine).

        Returns the number of segment files removed. Empty directories are pruned.
        """
        removed = 0
        with self._exclusive():
            for entry in self._entries(fingerprint, clean_temp=True):
                try:
                    entry.path.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
            for fp_dir in self._fingerprint_dirs(fingerprint):
                self._prune_empty(fp_dir)
            if fingerprint is None:
                for e in _scandir(self.root / QUARANTINE_DIR):
                    Path(e.path).unlink(missing_ok=True)
        return removed

    @staticmethod
    def _prune_empty(fp_dir: Path) -> None:
        # rmdir fails on a non-empty dir, e.g. one a concurrent put just wrote into.
        for shard in _scandir(fp_dir):
            try:
                os.rmdir(shard.path)
            except OSError:
                pass
        try:
            os.rmdir(fp_dir)
        except OSError:
            pass

    def enforce_budget(self, protected: AbstractSet[str] = frozenset()) -> list[tuple[str, str]]:
        """Delete least-recently-used segment files until the total fits the budget.

        Keys in ``protected`` are never deleted, so the total may stay over budget.
        Returns ``(fingerprint, key)`` of every file removed.
        """
        removed: list[tuple[str, str]] = []
        with self._exclusive():
            entries = list(self._entries(None))
            total = sum(e.size for e in entries)
            for entry in sorted(entries, key=lambda e: (e.mtime_ns, e.key)):
                if total <= self.budget_bytes:
                    break
                if entry.key in protected:
                    continue
                entry.path.unlink(missing_ok=True)  # vanished: freed all the same
                total -= entry.size
                removed.append((entry.fingerprint, entry.key))
        if removed:
            log.info("disk cache evicted %d segments; %d bytes remain", len(removed), total)
        return removed

    def _quarantine(self, path: Path, reason: str, seen: os.stat_result) -> None:
        """Move a bad file aside, unless another process already replaced or removed it."""
        qdir = self.root / QUARANTINE_DIR
        with self._exclusive():
            try:
                now = os.stat(path)
                if (now.st_ino, now.st_dev) != (seen.st_ino, seen.st_dev):
                    return  # a writer renamed a fresh file over the bad one
                qdir.mkdir(exist_ok=True)
                target = qdir / f"{path.parent.parent.name}.{path.name}.{time.time_ns()}"
                os.replace(path, target)
                os.utime(target)  # trim by time of quarantine, not of last use
            except FileNotFoundError:
                return
            log.warning("quarantined corrupt prompt-cache segment %s: %s", path, reason)
            self._trim_quarantine(qdir)

    @staticmethod
    def _trim_quarantine(qdir: Path) -> None:
        files = []
        for e in _scandir(qdir):
            try:
                files.append((e.stat().st_mtime_ns, e.path))
            except FileNotFoundError:
                pass
        for _, p in sorted(files)[:-QUARANTINE_KEEP]:
            Path(p).unlink(missing_ok=True)
