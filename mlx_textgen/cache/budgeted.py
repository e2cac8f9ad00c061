"""The disk store as the prompt cache's writer thread uses it: puts replace, the budget holds."""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np

from mlx_textgen.cache.store import DiskStore, SegmentRecord


class BudgetedStore(DiskStore):
    """The store as the writer thread sees it: every put replaces, then the budget holds.

    A key names a prefix, not a span: when the index splits a segment the lower part keeps
    its key with fewer tokens, so a put must replace the file rather than keep it. Budget
    evictions are reported to the MLX thread through ``events``.
    """

    def __init__(self, root: Path, budget_bytes: int, events: queue.SimpleQueue) -> None:
        super().__init__(root, budget_bytes)
        self.protected: frozenset[str] = frozenset()  # pinned keys; swapped whole by the MLX thread
        self._events = events
        self._total: int | None = None  # estimate of the bytes on disk; exact after a scan

    def put(
        self,
        record: SegmentRecord,
        arrays: dict[str, np.ndarray],
        dtypes: dict[str, str],
        meta: dict[str, str] | None = None,
        *,
        replace: bool = True,
    ) -> int:
        # Renamed over the old file, never deleted first: a kill between the two would
        # lose an entry that was whole on disk.
        size = super().put(record, arrays, dtypes, meta, replace=replace)
        self._total = self.nbytes() if self._total is None else self._total + size
        if self._total > self.budget_bytes:
            # The new file is newest, so it goes last anyway; protecting it keeps its
            # "written" report from arriving after an "evicted" one for the same key.
            removed = self.enforce_budget(self.protected | {record.key})
            self._total = self.nbytes()
            for fingerprint, key in removed:
                self._events.put(("evicted", fingerprint, key, 0))
        return size
