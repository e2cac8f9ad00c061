"""The glue between the prompt cache and the model: ``lookup`` before prefill, ``commit`` after.

One ``PrefixIndex`` per model fingerprint keeps the books; blobs live in two tiers:

- RAM: ``Segment``s of MLX arrays (device memory on a GPU), LRU within ``ram_budget_bytes``;
- disk: the ``DiskStore``, written by the ``DiskWriter`` thread, LRU within
  ``disk_budget_bytes``. An index is rebuilt from the disk's headers the first time its
  fingerprint is used, so after a restart the first request over a cached prefix loads
  from disk.

Every method runs on the MLX thread; the writer thread only reports back through a queue
that each call drains first. A lookup never raises over a cache problem: a segment that
cannot be loaded is forgotten and the lookup falls back to the longest prefix still
loadable, saying so in ``Lookup.reason``. Which prefixes a commit can store depends on the
cache kind: see ``segments.storable``.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_textgen import backend
from mlx_textgen.cache import reasons
from mlx_textgen.cache import segments as seg
from mlx_textgen.cache.budgeted import BudgetedStore
from mlx_textgen.cache.fingerprint import model_fingerprint
from mlx_textgen.cache.index import IndexRegistry, Match, Node, PrefixIndex
from mlx_textgen.cache.segments import Segment
from mlx_textgen.cache.store import SegmentRecord, check_fingerprint
from mlx_textgen.cache.writer import DiskWriter

log = logging.getLogger("mlx_textgen.cache")

_MAX_FALLBACKS = 16  # each one forgets a segment, so this only bounds a pathological case


@dataclass
class CacheOptions:
    """Where the disk tier lives and how much each tier may hold."""

    root: Path  # <cache_dir>/prompt_cache
    ram_budget_bytes: int = 2 << 30
    disk_budget_bytes: int = 20 << 30
    min_tokens: int = 20  # prompts shorter than this are not stored
    max_entries: int = 50  # per model fingerprint
    replace_threshold: float = 0.95
    max_reprocess_tokens: int = 250


@dataclass
class Lookup:
    """What a prompt can reuse: caches holding its first ``cached_tokens`` tokens."""

    cache: list[Any]
    cached_tokens: int
    reason: str
    pinned: list[Any] = field(default_factory=list)  # pass back to ``release``


@dataclass(eq=False)
class _Pin:
    index: PrefixIndex
    nodes: list[Node]
    released: bool = False


class PromptCacheManager:
    """Longest-prefix reuse of prompt KV across requests and restarts, per model fingerprint."""

    def __init__(self, options: CacheOptions) -> None:
        self.options = options
        self._events: queue.SimpleQueue[tuple[str, str, str, int | None]] = queue.SimpleQueue()
        self._store = BudgetedStore(Path(options.root), options.disk_budget_bytes, self._events)
        self._writer = DiskWriter(self._store)
        self._indexes = IndexRegistry(clock=time.time)  # wall clock: last_use goes to the API
        self._ram: dict[tuple[str, str], Segment] = {}
        self._pending: dict[tuple[str, str], list[tuple[PrefixIndex, Node]]] = {}
        self._active: dict[str, float] = {}  # fingerprint -> last lookup or commit
        self._use_disk = options.disk_budget_bytes > 0
        self._disabled = options.ram_budget_bytes <= 0 and not self._use_disk
        self._replace = {
            "replace_threshold": options.replace_threshold,
            "max_reprocess_tokens": options.max_reprocess_tokens,
        }

    # A model's fingerprint: see mlx_textgen.cache.fingerprint.
    fingerprint = staticmethod(model_fingerprint)

    # -- lookup ---------------------------------------------------------------------------

    def lookup(self, fingerprint: str, model: Any, tokens: list[int]) -> Lookup:
        """Fresh caches for ``model`` holding the longest cached prefix of ``tokens``.

        At most ``len(tokens) - 1`` tokens are restored, so the last one is left for the
        first decode step. The nodes used stay pinned until ``release(lookup.pinned)``.
        """
        self._sync()
        cache = backend.make_prompt_cache(model)
        if self._disabled:
            return Lookup(cache, 0, reasons.DISABLED)
        index = self._index(fingerprint, seg.is_trimmable(cache))
        self._active[fingerprint] = time.time()
        note = ""
        for _ in range(_MAX_FALLBACKS):
            match = index.match_prefix(tokens)
            if not match.nodes:
                return Lookup(cache, 0, note + self._miss_reason(fingerprint, index, match, cache))
            index.inc_lock_ref(match.nodes)
            self._refresh_protected()  # so that the disk budget leaves these files alone
            failed = self._restore(fingerprint, index, match, cache, room=len(tokens) - match.length)
            if failed is None:
                return self._hit(fingerprint, index, match, cache, note)
            index.dec_lock_ref(match.nodes)
            node, problem = failed
            note = f"{problem} segment at token {node.start}; "
            self._forget(fingerprint, index, node)
            cache = backend.make_prompt_cache(model)  # the failed restore may have filled some
        return Lookup(cache, 0, note + "too many failed segments")

    def _hit(
        self, fingerprint: str, index: PrefixIndex, match: Match, cache: list[Any], note: str
    ) -> Lookup:
        index.touch(match.nodes)
        for node in match.nodes:
            if node.on_disk and node.nbytes_ram:  # keep the disk's LRU order honest
                self._store.touch(fingerprint, node.key)
        pin = _Pin(index, match.nodes)
        return Lookup(cache, match.length, note + match.reason, [pin])

    def _restore(
        self, fingerprint: str, index: PrefixIndex, match: Match, cache: list[Any], room: int = 0
    ) -> tuple[Node, str] | None:
        """Fill ``cache`` from the match's segments; else the node that failed, and how."""
        segments: list[Segment] = []
        for node in match.nodes:
            segment = self._load(fingerprint, node)
            if isinstance(segment, str):
                return node, segment
            segments.append(segment)
        try:
            if index.trimmable:
                seg.restore_kv(cache, segments, match.length, room)
            else:
                seg.restore_state(cache, segments[0])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("prompt cache: segments of %s do not fit the model: %s", fingerprint, exc)
            return match.nodes[0], "unusable"
        return None

    def _load(self, fingerprint: str, node: Node) -> Segment | str:
        """The node's blob from RAM, else from disk (then kept in RAM); else what went wrong."""
        segment = self._ram.get((fingerprint, node.key))
        if segment is not None and node.nbytes_ram:
            return segment
        # Missing: evicted by the disk budget on the writer thread (not yet reported to this
        # thread) or deleted by another process. Unreadable: failed a check, quarantined.
        if not node.on_disk or not self._store.path_for(fingerprint, node.key).is_file():
            return "missing"
        segment = self._read_disk(fingerprint, node)
        if segment is None:
            return "unreadable"
        self._put_ram(fingerprint, node, segment)
        return segment

    def _read_disk(self, fingerprint: str, node: Node) -> Segment | None:
        got = self._store.get(fingerprint, node.key)
        if got is None:
            return None
        record, arrays, dtypes, meta = got
        try:
            segment = seg.from_numpy(arrays, dtypes, meta)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("prompt cache: segment %s unreadable: %s", node.key, exc)
            return None
        if not node.trimmable:
            return segment if len(record.tokens) == node.end else None
        span = len(node.tokens)
        # A file written before its segment was split holds the upper part's tokens too.
        if record.tokens[len(record.tokens) - span :] != node.tokens or segment.ntokens < span:
            return None
        return segment if segment.ntokens == span else seg.tail_kv(segment, span)

    def _forget(self, fingerprint: str, index: PrefixIndex, node: Node) -> None:
        """Drop a segment that cannot be restored from both tiers."""
        node.nbytes_ram, node.on_disk, node.nbytes_disk = 0, False, 0
        self._free(fingerprint, [node, *index.prune()])

    def _miss_reason(
        self, fingerprint: str, index: PrefixIndex, match: Match, cache: list[Any]
    ) -> str:
        if index.trimmable is False and match.reason not in (reasons.NO_ENTRY, reasons.divergence(0)):
            return reasons.only_at_checkpoints(match.reason, seg.uncuttable_classes(cache))
        if match.reason != reasons.NO_ENTRY or len(index) > 0:
            return match.reason
        name = fingerprint.rpartition("-")[0]
        others = set(self._indexes.fingerprints()) | set(self._disk_fingerprints())
        if name and any(fp != fingerprint and fp.rpartition("-")[0] == name for fp in others):
            return reasons.MODEL_CHANGED
        return match.reason

    def release(self, pinned: list[Any]) -> None:
        """Unpin what a ``Lookup`` pinned; releasing twice is harmless."""
        for pin in pinned:
            if isinstance(pin, _Pin) and not pin.released:
                pin.released = True
                pin.index.dec_lock_ref(pin.nodes)
        self._refresh_protected()

    # -- commit ---------------------------------------------------------------------------

    def commit(
        self, fingerprint: str, tokens: list[int], cache: list[Any], boundaries: list[int]
    ) -> int:
        """Store the segments of ``tokens`` that end at ``boundaries``; return bytes added.

        ``cache``: plain per-layer mlx-lm caches (not batch caches) holding ``tokens``, or
        at least up to the last boundary; boundaries beyond what it holds are ignored. The
        segments are copied, so the caller may keep using and mutating ``cache``. Segments
        go to RAM now and to disk on the writer thread. Bytes added is the growth of the
        RAM tier before eviction (a re-stored split segment counts only its change).
        """
        self._sync()
        if self._disabled or not cache:
            return 0
        trimmable = seg.is_trimmable(cache)
        tokens, cuts = seg.storable(tokens, cache, boundaries)
        if not cuts:
            return 0
        index = self._index(fingerprint, trimmable)
        self._active[fingerprint] = time.time()
        opts = self.options
        created = index.insert(tokens, cuts, trimmable=trimmable, min_tokens=opts.min_tokens)
        added = self._store_new(fingerprint, index, tokens, cache, created)
        with self._writes_unpinned():
            dropped = index.drop_replaced(tokens, **self._replace)
        self._free(fingerprint, dropped)
        self._enforce_budgets()
        return added

    def _store_new(
        self, fp: str, index: PrefixIndex, tokens: list[int], cache: list[Any], created: list[Node]
    ) -> int:
        """Give each node ``insert`` returned its blob: from ``cache`` or an old blob."""
        held = seg.cache_length(cache)
        limit = len(tokens) if held is None else min(held, len(tokens))
        query = tuple(tokens)
        added = 0
        tails: list[tuple[Node, Segment]] = []
        for node in {id(n): n for n in created}.values():  # a node split twice comes twice
            split = False
            if _on_path(node, query) and node.end <= limit:
                if node.trimmable:
                    segment: Segment | None = seg.slice_kv(cache, node.start, node.end)
                else:
                    segment = seg.snapshot(cache, node.end) if node.end == limit else None
            else:
                segment = self._split_tail(fp, node) if node.trimmable else None
                split = True
            if segment is None:
                continue  # a checkpoint branch point, or a tail lost with its old blob
            added += self._put_ram(fp, node, segment)
            if split:
                tails.append((node, segment))
            else:
                self._submit(fp, index, node, segment)
        # A split tail's file replaces one that holds its head's tokens too: written last,
        # so a kill in between leaves the old file (still whole) rather than a lost head.
        for node, segment in tails:
            self._submit(fp, index, node, segment)
        return added

    def _split_tail(self, fingerprint: str, node: Node) -> Segment | None:
        """The lower part of a split segment, cut from the old blob its key still names."""
        old = self._ram.get((fingerprint, node.key))
        span = len(node.tokens)
        if old is not None and old.ntokens >= span:
            return seg.tail_kv(old, span)
        if not self._use_disk:
            return None
        return self._read_disk(fingerprint, node)  # cuts the tail when the file spans more

    def _submit(self, fingerprint: str, index: PrefixIndex, node: Node, segment: Segment) -> None:
        """Queue the segment for the disk; pinned until the writer reports back."""
        if not self._use_disk:
            return
        parent_key, span = index.record_span(node)
        record = SegmentRecord(
            node.key, parent_key, fingerprint, span, segment.nbytes, node.trimmable,
            node.is_boundary,
        )  # fmt: skip
        arrays, dtypes, meta = seg.to_numpy(segment)
        if self._writer.submit(record, arrays, dtypes, meta, on_done=self._on_written):
            index.inc_lock_ref([node])
            self._pending.setdefault((fingerprint, node.key), []).append((index, node))

    def _on_written(self, record: SegmentRecord, result: int | None) -> None:
        # The writer thread: the index is the MLX thread's, so only report.
        self._events.put(("written", record.fingerprint, record.key, result))

    # -- books ----------------------------------------------------------------------------

    def _sync(self) -> None:
        """Apply the writer's reports, in order (a key may be evicted, then written anew)."""
        evicted_from: set[str] = set()
        while True:
            try:
                kind, fingerprint, key, result = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "written":
                self._written(fingerprint, key, result)
            elif fingerprint in self._indexes:
                for node in self._indexes.get(fingerprint).nodes():
                    if node.key == key:
                        node.on_disk, node.nbytes_disk = False, 0
                evicted_from.add(fingerprint)
        for fingerprint in evicted_from:
            self._free(fingerprint, self._indexes.get(fingerprint).prune())
        self._enforce_budgets()

    def _written(self, fingerprint: str, key: str, result: int | None) -> None:
        waiting = self._pending.get((fingerprint, key))
        if not waiting:
            return
        index, node = waiting.pop(0)
        if not waiting:
            del self._pending[(fingerprint, key)]
        index.dec_lock_ref([node])  # a no-op once the node left the tree
        if node.parent is None:  # dropped while on its way: the file it left is stray
            again = self._pending.get((fingerprint, key)) or any(
                n.key == key for n in index.nodes()
            )
            if result and not again:
                self._store.delete(fingerprint, key)
        elif result:  # 0: over the disk budget; None: failed (logged)
            node.on_disk, node.nbytes_disk = True, result

    @contextmanager
    def _writes_unpinned(self) -> Iterator[None]:
        """Entry rules (replace, max_entries) treat segments on their way to disk as unpinned:
        those pins only keep the RAM copy, the segment's only one until the write lands."""
        held = [pair for waits in self._pending.values() for pair in waits]
        for index, node in held:
            index.dec_lock_ref([node])
        try:
            yield
        finally:
            for index, node in held:
                if node.parent is not None:
                    index.inc_lock_ref([node])

    def _put_ram(self, fingerprint: str, node: Node, segment: Segment) -> int:
        old = self._ram.get((fingerprint, node.key))
        self._ram[(fingerprint, node.key)] = segment
        node.nbytes_ram = segment.nbytes
        return segment.nbytes - (old.nbytes if old is not None else 0)

    def _free(self, fingerprint: str, nodes: Iterable[Node]) -> None:
        """Delete the blobs the index no longer lists for these nodes."""
        for node in nodes:
            if node.nbytes_ram == 0:
                self._ram.pop((fingerprint, node.key), None)
            if not node.on_disk and self._use_disk:
                self._store.delete(fingerprint, node.key)

    def _enforce_budgets(self) -> None:
        """Entries over ``max_entries`` go, then RAM over its budget; pins may defer both."""
        for fingerprint in self._indexes.fingerprints():
            index = self._indexes.get(fingerprint)
            with self._writes_unpinned():
                dropped = index.evict_entries(self.options.max_entries)
            self._free(fingerprint, dropped)
        self._evict_ram()
        self._refresh_protected()

    def _evict_ram(self) -> None:
        """Least recently active models give up RAM first; segments stay on disk."""
        totals = {
            fp: self._indexes.get(fp).total_bytes_ram() for fp in self._indexes.fingerprints()
        }
        excess = sum(totals.values()) - max(0, self.options.ram_budget_bytes)
        for fingerprint in sorted(totals, key=lambda fp: self._active.get(fp, 0.0)):
            if excess <= 0:
                break
            index = self._indexes.get(fingerprint)
            self._free(fingerprint, index.evict_ram(max(0, totals[fingerprint] - excess)))
            excess -= totals[fingerprint] - index.total_bytes_ram()

    def _refresh_protected(self) -> None:
        nodes = (n for fp in self._indexes.fingerprints() for n in self._indexes.get(fp).nodes())
        self._store.protected = frozenset(n.key for n in nodes if n.lock_ref > 0)

    def _index(self, fingerprint: str, trimmable: bool | None) -> PrefixIndex:
        """The fingerprint's index, rebuilt from disk on first use; reset if the kind changed."""
        if fingerprint not in self._indexes:
            index = self._indexes.get(fingerprint)
            if self._use_disk:
                self._restore_index(fingerprint, index)
        index = self._indexes.get(fingerprint)
        if trimmable is not None and index.trimmable not in (None, trimmable):
            log.warning("prompt cache of %s holds another cache kind; cleared", fingerprint)
            self.clear(fingerprint)
            index = self._indexes.get(fingerprint)
        return index

    def _restore_index(self, fingerprint: str, index: PrefixIndex) -> None:
        skipped = index.restore(self._store.scan(fingerprint))
        live = {node.key for node in index.nodes() if node.on_disk}
        for record in skipped:
            if record.key not in live:
                self._store.delete(fingerprint, record.key)
        if skipped:
            log.info("prompt cache %s: %d stray segments removed", fingerprint, len(skipped))

    def _disk_fingerprints(self) -> list[str]:
        if not self._use_disk:
            return []
        with os.scandir(self._store.root) as it:
            names = [e.name for e in it if e.is_dir()]
        return [name for name in names if _valid_fingerprint(name)]

    # -- admin ----------------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Every entry of every model, most recently used first (for GET /v1/cache)."""
        self._sync()
        for fingerprint in self._disk_fingerprints():
            self._index(fingerprint, None)  # so that entries only on disk show too
        out: list[dict[str, Any]] = []
        for fingerprint in self._indexes.fingerprints():
            for e in self._indexes.get(fingerprint).entries():
                out.append({
                    "fingerprint": fingerprint, "key": e.key, "tokens": e.tokens,
                    "bytes": e.nbytes_ram if e.nbytes_ram else e.nbytes_disk,
                    "bytes_ram": e.nbytes_ram, "bytes_disk": e.nbytes_disk, "tier": e.tier,
                    "hits": e.hits, "last_use": e.last_use,
                })  # fmt: skip
        out.sort(key=lambda entry: entry["last_use"], reverse=True)
        return out

    def clear(self, fingerprint: str | None = None) -> int:
        """Forget one model's segments, or every model's; return how many went."""
        self._writer.flush()
        self._sync()
        known = set(self._indexes.fingerprints()) | set(self._disk_fingerprints())
        targets = sorted(known) if fingerprint is None else [fingerprint]
        removed = 0
        for fp in targets:
            index = self._indexes.drop(fp)
            stored = sum(1 for node in index.nodes() if node.stored) if index else 0
            for key in [k for k in self._ram if k[0] == fp]:
                del self._ram[key]
            files = self._store.delete_all(fp) if self._use_disk else 0
            removed += max(stored, files)
        if fingerprint is None and self._use_disk:
            self._store.delete_all()  # the quarantine too
        self._refresh_protected()
        return removed

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the pending disk writes and apply them; False if ``timeout`` ran out."""
        done = self._writer.flush(timeout)
        self._sync()
        return done

    def close(self) -> None:
        """Finish the pending disk writes and stop the writer thread."""
        self._writer.flush()
        self._writer.close()
        self._sync()


def _on_path(node: Node, query: tuple[int, ...]) -> bool:
    """Whether the prefix ending at ``node`` is a prefix of ``query``."""
    current: Node | None = node
    while current is not None and current.parent is not None:
        if query[current.start : current.end] != current.tokens:
            return False
        current = current.parent
    return True


def _valid_fingerprint(name: str) -> bool:
    try:
        check_fingerprint(name)
    except ValueError:
        return False
    return True
