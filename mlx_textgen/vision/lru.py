"""A least-recently-used map bounded by the bytes of what it holds: the vision path's caches
(downloaded bodies, decoded images, processor outputs, vision-tower outputs) are all one."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class SizedLRU(Generic[V]):
    """At most `limit_bytes` of values (as `size_of` counts them), least recently used out
    first; a value larger than the whole limit is not kept. Safe across threads."""

    def __init__(self, limit_bytes: int, size_of: Callable[[V], int]) -> None:
        self.limit_bytes = limit_bytes
        self.nbytes = 0
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        """The value of `key` (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        """Keep `value` for `key`, evicting the least recently used to make room."""
        size = self._size_of(value)
        if size > self.limit_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.nbytes -= old[1] if old is not None else 0
            while self._items and self.nbytes + size > self.limit_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self.nbytes -= evicted
            self._items[key] = (value, size)
            self.nbytes += size

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
