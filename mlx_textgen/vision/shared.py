"""Images' pixel arrays in shared memory, so they reach the engine process without its pipe.

A 448 px image is 4.8 MB of float32 patches and a 1024 px one 23 MB; pickled into the
engine's pipe with every request, on the HTTP process's event loop, that was half of a next
turn's time on a GPU (the engine seldom even reads them: the prompt cache or the tower cache
usually holds the image). Here the HTTP process keeps each recent image's arrays in one
shared-memory segment (an LRU by bytes, `SharedStore`), and what crosses the pipe is a
`SharedArray` handle: the segment's name, shape and dtype. The engine copies the array out
only when it runs the vision tower.

A segment is pinned while any prompt that uses it is alive in the HTTP process (each
`VisionPrompt` holds its pins, released when it is garbage, that is once its requests are
done), so a queued request's images are never evicted before the engine reads them. Where
shared memory is unavailable, arrays stay inline (pickled, as before).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np

log = logging.getLogger("mlx_textgen.vision")

INLINE_BYTES = 1 << 16  # smaller arrays (the grid) travel inline
SHM_DIR = "/dev/shm"
SHM_SPARE = 32 << 20  # left free there for everyone else


@dataclass(frozen=True)
class SharedArray:
    """Where one array lies in a shared segment; pickles as these few fields."""

    segment: str
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


@contextlib.contextmanager
def opened(value: np.ndarray | SharedArray) -> Iterator[np.ndarray]:
    """The array itself, or a view of a shared one valid inside the block (copy it there)."""
    if not isinstance(value, SharedArray):
        yield value
        return
    shm = _attach(value.segment)
    view = np.ndarray(value.shape, np.dtype(value.dtype), buffer=shm.buf, offset=value.offset)
    try:
        yield view
    finally:
        del view
        shm.close()


def _room(size: int) -> bool:
    """Whether `size` more bytes fit where POSIX shared memory lives, when it is a
    filesystem (/dev/shm): a write past a full tmpfs is a SIGBUS, not an error. Containers
    often give it 64 MB."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:  # not a filesystem here (macOS): bounded by memory only
        return True
    return st.f_bavail * st.f_frsize >= size + SHM_SPARE


_attach_lock = threading.Lock()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach without taking ownership: only the store that made a segment unlinks it. (Before
    3.13 attaching registers the segment with the attaching process's resource tracker,
    which unlinks it when that process ends: registration is skipped here instead.)"""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]
    with _attach_lock:
        register = resource_tracker.register
        resource_tracker.register = lambda *_: None  # type: ignore[assignment]
        try:
            return shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = register


_stores: weakref.WeakSet[SharedStore] = weakref.WeakSet()


def close_all() -> None:
    """Unlink every store's segments (the server's shutdown; atexit covers the rest)."""
    for store in list(_stores):
        store.close()


@dataclass
class _Entry:
    value: Any
    arrays: dict[str, np.ndarray | SharedArray]
    shm: shared_memory.SharedMemory | None
    nbytes: int
    pins: int = 0


class SharedStore:
    """Recent images' processor output by key, big arrays in shared memory: at most
    `limit_bytes` of unpinned entries, least recently used out first."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.nbytes = 0
        self._items: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._shared_ok = True
        self._told_full = False
        _stores.add(self)
        atexit.register(self.close)

    def get(self, key: Hashable) -> tuple[Any, dict[str, np.ndarray | SharedArray]] | None:
        """(value, arrays) of `key`, pinned once (release with `unpin`), or None."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            self._items.move_to_end(key)
            entry.pins += 1
            return entry.value, entry.arrays

    def put(self, key: Hashable, value: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """Keep `arrays` (big ones moved to one shared segment) with `value`, pinned once;
        the arrays to send instead. If another thread kept the same key meanwhile, its
        arrays are the ones returned (and pinned)."""
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                entry.pins += 1
                return entry.arrays
        shm, moved = self._share(arrays)
        nbytes = sum(int(a.nbytes) for a in arrays.values())
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:  # lost a race: keep the first, drop ours
                entry.pins += 1
                self._unlink(shm)
                return entry.arrays
            self._items[key] = _Entry(value, moved, shm, nbytes, pins=1)
            self.nbytes += nbytes
            self._evict()
        return moved

    def unpin(self, keys: list[Hashable]) -> None:
        with self._lock:
            for key in keys:
                entry = self._items.get(key)
                if entry is not None and entry.pins > 0:
                    entry.pins -= 1
            self._evict()

    def close(self) -> None:
        """Unlink every segment (at exit)."""
        with self._lock:
            for entry in self._items.values():
                self._drop(entry)
            self._items.clear()

    def _share(self, arrays: dict[str, np.ndarray]) -> tuple[Any, dict[str, Any]]:
        big = {k: a for k, a in arrays.items() if a.nbytes >= INLINE_BYTES}
        size = sum(a.nbytes for a in big.values())
        if not big or not self._shared_ok:
            return None, dict(arrays)
        if not _room(size):
            if not self._told_full:
                self._told_full = True
                log.warning("no room in %s for image arrays: they go through the engine's "
                            "pipe while it is full", SHM_DIR)  # fmt: skip
            return None, dict(arrays)
        try:
            shm = shared_memory.SharedMemory(create=True, size=size)
        except OSError as exc:  # no /dev/shm, or it is full: inline from now on
            self._shared_ok = False
            log.warning("shared memory unavailable (%s): image arrays go through the pipe", exc)
            return None, dict(arrays)
        moved: dict[str, Any] = dict(arrays)
        offset = 0
        for k, a in big.items():
            a = np.ascontiguousarray(a)
            np.ndarray(a.shape, a.dtype, buffer=shm.buf, offset=offset)[...] = a
            moved[k] = SharedArray(shm.name, offset, tuple(a.shape), a.dtype.str)
            offset += a.nbytes
        return shm, moved

    def _evict(self) -> None:
        for key in list(self._items):
            if self.nbytes <= self.limit_bytes:
                return
            entry = self._items[key]
            if entry.pins == 0:
                del self._items[key]
                self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        self.nbytes -= entry.nbytes
        self._unlink(entry.shm)
        entry.shm = None

    @staticmethod
    def _unlink(shm: shared_memory.SharedMemory | None) -> None:
        if shm is not None:
            with contextlib.suppress(OSError):
                shm.close()
                shm.unlink()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def pinned(self, key: Hashable) -> int:
        entry = self._items.get(key)
        return 0 if entry is None else entry.pins
