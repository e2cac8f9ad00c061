"""Radix tree over token ids: which cached prefix a prompt can reuse, and what to evict.

Pure Python (no mlx, no numpy): the index only keeps books, tested on plain lists of ints.
A *segment* is the KV (or state) for a contiguous span of tokens, stored as one blob under
its *segment key*; every tree node is one segment. A *boundary* is a position worth
resuming from (end of system prompt or tools block, of each message, of a request's prompt
or completion). An *entry* is a cached prefix ending at a boundary.

Each tree (one per model fingerprint) holds one cache kind:

- trimmable (full-attention KV): a blob holds the KV of its node's span only; a prefix is
  restored by concatenating the chain of segments from the root, the last one cut to any
  length.
- checkpoint (sliding-window or SSM state, ``trimmable=False``): a blob is the full state at
  its node's end. Nodes are independent: a restore loads only the deepest usable one, and
  a node without a blob is just a branch point.

The caller records residency on the node (``nbytes_ram``, ``on_disk``, ``nbytes_disk``).
Eviction methods clear those flags on the nodes they return; for each, the caller frees
every blob the index no longer lists (RAM when ``nbytes_ram == 0``, disk when not
``on_disk``), deleting by key, which is idempotent.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

_U32 = struct.Struct("<I")
Tier = Literal["ram", "disk", "ram+disk"]


def segment_key(parent_key: str, tokens: Sequence[int]) -> str:
    """Key of the segment ``tokens`` whose parent has key ``parent_key``.

    One step is ``sha256(parent_key.encode() + token as little-endian uint32)`` cut to 32
    hex digits, chained token by token from the root, whose parent key is the fingerprint.
    Per token, so that ``segment_key(segment_key(p, a), b) == segment_key(p, a + b)``: a
    key names a prefix, not a segmentation, and a split never renames the nodes below it.
    """
    key = parent_key
    for token in tokens:
        key = hashlib.sha256(key.encode() + _U32.pack(token)).hexdigest()[:32]
    return key


@dataclass(eq=False, slots=True)
class Node:
    """One segment: the span ``tokens`` starting at token position ``start``."""

    tokens: tuple[int, ...]
    key: str
    parent: Node | None
    start: int
    trimmable: bool
    children: dict[int, Node] = field(default_factory=dict)
    nbytes_ram: int = 0  # 0 when not resident in RAM
    on_disk: bool = False
    nbytes_disk: int = 0
    is_boundary: bool = False  # an entry ends here
    hits: int = 0
    last_use: float = 0.0
    lock_ref: int = 0  # pins on this node or any descendant

    @property
    def end(self) -> int:
        """Position right after this segment: the length of its prefix."""
        return self.start + len(self.tokens)

    @property
    def stored(self) -> bool:
        """Whether this segment's blob exists in RAM or on disk."""
        return self.nbytes_ram > 0 or self.on_disk


@dataclass
class Match:
    """What ``match_prefix`` found.

    ``nodes``: the segments whose blobs to load, root first (one node in a checkpoint
    tree). ``length``: query tokens they cover. ``partial``: tokens of the last node used
    (less than its length only when a trimmable segment is cut). ``diverged_at``: where the
    query left the deepest cached path, if it did. ``reason``: "hit", "no entry",
    "divergence at token N" or "cache type not reusable there".
    """

    nodes: list[Node] = field(default_factory=list)
    length: int = 0
    partial: int = 0
    diverged_at: int | None = None
    reason: str = "no entry"


@dataclass
class EntryInfo:
    """One entry for the admin API; bytes add up every segment its restore loads."""

    key: str
    tokens: int
    nbytes_ram: int
    nbytes_disk: int
    tier: Tier
    hits: int
    last_use: float


class SegmentRecordLike(Protocol):
    """The fields of the disk tier's segment record that ``restore`` reads."""

    @property
    def key(self) -> str: ...
    @property
    def parent_key(self) -> str: ...
    @property
    def tokens(self) -> tuple[int, ...]: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def trimmable(self) -> bool: ...
    @property
    def is_boundary(self) -> bool: ...


class _Walk(NamedTuple):
    path: list[Node]  # nodes fully matched, root excluded
    partial: Node | None  # the node the query stopped inside, if any
    partial_len: int  # tokens of ``partial`` that agree with the query
    diverged_at: int | None


class PrefixIndex:
    """Radix tree of cached segments for one model fingerprint; one thread owns it."""

    def __init__(self, fingerprint: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.fingerprint = fingerprint
        self._clock = clock
        self._root = Node(tokens=(), key=fingerprint, parent=None, start=0, trimmable=True)
        self._trimmable: bool | None = None  # fixed by the first insert or restore

    @property
    def trimmable(self) -> bool | None:
        """The tree's cache kind; None until something was inserted or restored."""
        return self._trimmable

    def __len__(self) -> int:
        return sum(1 for _ in self.nodes())

    def nodes(self) -> Iterator[Node]:
        """Every segment in the tree, each parent before its children."""
        stack = list(self._root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def match_prefix(self, tokens: Sequence[int]) -> Match:
        """Longest stored prefix of ``tokens`` that can be restored, at most ``len - 1``.

        A trimmable match may end inside a segment. A checkpoint counts only when fully
        matched, so the match backs off to the deepest stored checkpoint at or before the
        cap. Nothing changes: ``touch`` the nodes you use, pin them while loading.
        """
        query = tuple(tokens)
        walk = self._walk(query)
        cap = len(query) - 1
        not_reusable = False
        if self._trimmable is False:
            nodes, length = _deepest_checkpoint(walk, cap)
            overlap = walk.path[-1].end if walk.path else 0
            not_reusable = walk.partial_len > 0 or overlap > length
        else:
            nodes, length = _stored_chain(walk, cap)
        match = Match(nodes, length, length - nodes[-1].start if nodes else 0, walk.diverged_at)
        if not_reusable:
            match.reason = "cache type not reusable there"
        elif length == 0:
            match.reason = "no entry"
        elif walk.diverged_at is not None:
            match.reason = f"divergence at token {walk.diverged_at}"
        else:
            match.reason = "hit"
        return match

    def _walk(self, query: tuple[int, ...]) -> _Walk:
        node, pos, path = self._root, 0, []
        while pos < len(query):
            child = node.children.get(query[pos])
            if child is None:
                return _Walk(path, None, 0, pos if node.children else None)
            m = _common_prefix(child.tokens, query, pos)
            if m < len(child.tokens):
                return _Walk(path, child, m, pos + m if pos + m < len(query) else None)
            path.append(child)
            node, pos = child, child.end
        return _Walk(path, None, 0, None)

    def insert(
        self,
        tokens: Sequence[int],
        boundaries: Sequence[int],
        *,
        trimmable: bool,
        min_tokens: int = 0,
    ) -> list[Node]:
        """Make segments end at each boundary of ``tokens``; return the ones to store.

        ``boundaries``: ascending token counts, the last at most ``len(tokens)``; those
        under ``min_tokens`` are ignored, as are tokens past the last one. Returned, in
        walk order: every segment of the path without a blob (new, split, or one that has
        none yet). Store them, or pin them until stored: eviction prunes blobless nodes.

        Split rule: where a boundary, or the point where ``tokens`` diverges, falls inside
        a segment, the segment is cut in two; the upper part is a new node with a new key,
        the lower part keeps the node object and its key. Trimmable: both parts are
        returned with residency cleared, as the old blob (still held under the lower
        part's key) spans both: the upper part is its first ``len(upper.tokens)`` tokens,
        the lower part its last ``len(lower.tokens)``; store each, overwriting the old
        blob. Checkpoint: the lower part keeps its blob, the state at its end; only the
        upper part is returned, to snapshot if you have that state, else a branch point.
        """
        self._set_kind(trimmable)
        query = tuple(tokens)
        cuts = _valid_cuts(boundaries, len(query), min_tokens)
        if not cuts:
            return []
        now, cut_set, created = self._clock(), set(cuts), []
        node, pos, i = self._root, 0, 0
        while pos < cuts[-1]:
            while cuts[i] <= pos:
                i += 1
            child = node.children.get(query[pos])
            if child is None:
                for cut in cuts[i:]:
                    node = self._add_child(node, query[node.end : cut], now)
                    node.is_boundary = True
                    created.append(node)
                break
            stop = min(pos + _common_prefix(child.tokens, query, pos), cuts[i])
            if stop < child.end:
                created.extend(self._split(child, stop))
                child = child.parent
                assert child is not None
            node, pos = child, child.end
            node.last_use = now
            node.is_boundary = node.is_boundary or pos in cut_set
            if not node.stored and node not in created:
                created.append(node)  # e.g. a branch point that is now a boundary
        return created

    def _set_kind(self, trimmable: bool) -> None:
        if self._trimmable is None:
            self._trimmable = trimmable
        elif self._trimmable != trimmable:
            kind = "trimmable" if self._trimmable else "checkpoint"
            raise ValueError(f"{self.fingerprint!r} has a {kind} cache; one kind per fingerprint")

    def _add_child(self, parent: Node, span: tuple[int, ...], now: float) -> Node:
        key = segment_key(parent.key, span)
        child = Node(span, key, parent, parent.end, bool(self._trimmable), last_use=now)
        parent.children[span[0]] = child
        return child

    def _split(self, node: Node, at: int) -> list[Node]:
        """Cut ``node`` at position ``at``; the node object becomes the lower part."""
        parent = node.parent
        assert parent is not None and node.start < at < node.end
        head = node.tokens[: at - node.start]
        # Every pin through ``node`` also covers the new upper part.
        top = Node(head, segment_key(parent.key, head), parent, node.start, node.trimmable)
        top.hits, top.last_use, top.lock_ref = node.hits, node.last_use, node.lock_ref
        parent.children[head[0]] = top
        node.tokens, node.start, node.parent = node.tokens[len(head) :], at, top
        top.children[node.tokens[0]] = node
        if not node.trimmable:
            return [top]
        node.nbytes_ram, node.on_disk, node.nbytes_disk = 0, False, 0
        return [top, node]

    def touch(self, nodes: Iterable[Node]) -> None:
        """Count a hit on each node; mark it and its ancestors as just used."""
        nodes = list(nodes)
        for node in nodes:
            node.hits += 1
        now = self._clock()
        for node in _with_ancestors(nodes):
            node.last_use = now

    def inc_lock_ref(self, nodes: Iterable[Node]) -> None:
        """Pin ``nodes`` and their ancestors: no eviction removes or drops them."""
        for node in _with_ancestors(nodes):
            node.lock_ref += 1

    def dec_lock_ref(self, nodes: Iterable[Node]) -> None:
        """Undo one ``inc_lock_ref`` of the same nodes (splits in between are fine)."""
        chain = _with_ancestors(nodes)
        unpinned = [node.key for node in chain if node.lock_ref <= 0]
        if unpinned:  # checked first, so a bad call leaves every pin as it was
            raise ValueError(f"segments not pinned: {unpinned}")
        for node in chain:
            node.lock_ref -= 1

    def total_bytes_ram(self) -> int:
        """Bytes of all blobs resident in RAM."""
        return sum(node.nbytes_ram for node in self.nodes())

    def total_bytes_disk(self) -> int:
        """Bytes of all blobs on disk, as recorded in ``nbytes_disk``."""
        return sum(node.nbytes_disk for node in self.nodes() if node.on_disk)

    def evict_ram(self, budget_bytes: int) -> list[Node]:
        """Drop RAM blobs, least recently used leaves first, until within the budget.

        A node with a child in RAM is no leaf here; pinned nodes stay. Dropped nodes stay
        in the tree while on disk; the others are pruned (``prune``) and returned as well.
        """

        def is_leaf(node: Node) -> bool:
            ram_child = any(c.nbytes_ram > 0 for c in node.children.values())
            return node.nbytes_ram > 0 and node.lock_ref == 0 and not ram_child

        total = self.total_bytes_ram()
        dropped: list[Node] = []
        for node in _lru_pops(self.nodes(), is_leaf):
            if total <= budget_bytes:
                break
            total -= node.nbytes_ram
            node.nbytes_ram = 0
            dropped.append(node)
        return _merge(dropped, self.prune())

    def evict_disk(
        self, budget_bytes: int, nbytes_disk: Callable[[Node], int] | None = None
    ) -> list[Node]:
        """Delete disk blobs, least recently used leaves first, until within the budget.

        ``nbytes_disk`` sizes a node on disk (default: its ``nbytes_disk``). A node with a
        child on disk is no leaf here; pinned nodes stay. Nodes left without a blob are
        pruned (``prune``) and returned as well.
        """
        size = nbytes_disk or (lambda node: node.nbytes_disk)

        def is_leaf(node: Node) -> bool:
            disk_child = any(c.on_disk for c in node.children.values())
            return node.on_disk and node.lock_ref == 0 and not disk_child

        removed = self.prune()
        total = sum(size(node) for node in self.nodes() if node.on_disk)
        dropped: list[Node] = []
        for node in _lru_pops(self.nodes(), is_leaf):
            if total <= budget_bytes:
                break
            total -= size(node)
            node.on_disk, node.nbytes_disk = False, 0
            dropped.append(node)
        return _merge(removed, dropped, self.prune())

    def prune(self) -> list[Node]:
        """Remove the unpinned segments that hold no blob; return them.

        Trimmable: such a segment breaks every chain through it, so its subtree goes too.
        Checkpoint: it is a harmless branch point, so it goes only once it is a leaf.
        """
        removed: list[Node] = []
        if self._trimmable is False:
            for node in reversed(list(self.nodes())):  # children before parents
                if not node.children and not node.stored and node.lock_ref == 0:
                    removed.extend(self._remove_subtree(node))
            return removed
        stack = list(self._root.children.values())
        while stack:
            node = stack.pop()
            if not node.stored and node.lock_ref == 0:
                removed.extend(self._remove_subtree(node))
            else:
                stack.extend(node.children.values())
        return removed

    def evict_entries(self, max_entries: int) -> list[Node]:
        """Keep at most ``max_entries`` entries, dropping the least recently used.

        Dropping an entry clears its boundary; segments no entry needs any more are removed
        and returned. Pinned entries stay, even beyond ``max_entries``.
        """
        entries = [node for node in self.nodes() if node.is_boundary]
        excess = len(entries) - max_entries
        unpinned = [node for node in entries if node.lock_ref == 0]
        # Deeper first on ties: ``touch`` gives ancestors the time of their leaf.
        unpinned.sort(key=lambda node: (node.last_use, -node.end))
        return self._drop_entries(unpinned[: max(excess, 0)])

    def _drop_entries(self, entries: list[Node]) -> list[Node]:
        removed: list[Node] = []
        for node in entries:
            node.is_boundary = False
            while node.parent is not None and not node.children:
                if node.is_boundary or node.lock_ref > 0:
                    break
                parent = node.parent
                removed.extend(self._remove_subtree(node))
                node = parent
        return removed

    def _remove_subtree(self, node: Node) -> list[Node]:
        assert node.parent is not None
        del node.parent.children[node.tokens[0]]
        removed, stack = [], [node]
        while stack:
            gone = stack.pop()
            stack.extend(gone.children.values())
            gone.parent, gone.children, gone.is_boundary = None, {}, False
            gone.nbytes_ram, gone.on_disk, gone.nbytes_disk = 0, False, 0
            removed.append(gone)
        return removed

    def replace_candidates(
        self, tokens: Sequence[int], *, replace_threshold: float, max_reprocess_tokens: int
    ) -> list[Node]:
        """Entries that ``tokens`` (a prompt, or prompt plus completion, once inserted) replaces.

        An entry E that branches off ``tokens`` after sharing ``s > 0`` tokens with it is
        replaced when ``s >= replace_threshold * len(E)`` (the share of the old entry, as
        the original MLX-Textgen measured it) and its unshared tail ``len(E) - s`` is at
        most ``max_reprocess_tokens``. Entries that are a prefix of ``tokens``, or that
        ``tokens`` is a prefix of, cost no bytes of their own and are never replaced;
        pinned entries neither.
        """
        query = tuple(tokens)
        walk = self._walk(query)
        branches: list[tuple[int, Node]] = []  # (shared tokens, root of an off-path subtree)
        on_path = [self._root, *walk.path]
        for i, node in enumerate(on_path):
            nxt = on_path[i + 1] if i + 1 < len(on_path) else walk.partial
            if 0 < node.end < len(query):
                branches.extend((node.end, c) for c in node.children.values() if c is not nxt)
        if walk.partial is not None and walk.diverged_at is not None:
            branches.append((walk.diverged_at, walk.partial))
        found: list[Node] = []
        for shared, top in branches:
            stack = [top]
            while stack:
                node = stack.pop()
                if node.end - shared > max_reprocess_tokens:
                    continue  # deeper entries have longer tails still
                if (
                    node.is_boundary
                    and not node.lock_ref
                    and shared >= replace_threshold * node.end
                ):
                    found.append(node)
                stack.extend(node.children.values())
        return found

    def drop_replaced(
        self, tokens: Sequence[int], *, replace_threshold: float, max_reprocess_tokens: int
    ) -> list[Node]:
        """Drop the entries ``replace_candidates`` names (call after inserting ``tokens``)."""
        found = self.replace_candidates(
            tokens, replace_threshold=replace_threshold, max_reprocess_tokens=max_reprocess_tokens
        )
        return self._drop_entries(found)

    def segments_for(self, node: Node) -> list[Node]:
        """The segments whose blobs restore the prefix ending at ``node``, root first."""
        return self._ancestry(node)[::-1] if node.trimmable else [node]

    @staticmethod
    def _ancestry(node: Node) -> list[Node]:
        """``node`` and its ancestors up to the root (excluded), deepest first."""
        chain: list[Node] = []
        current: Node | None = node
        while current is not None and current.parent is not None:
            chain.append(current)
            current = current.parent
        return chain

    def entries(self) -> list[EntryInfo]:
        """Entries whose segments are all stored, most recently used first."""
        infos = []
        for node in self.nodes():
            chain = self.segments_for(node) if node.is_boundary else []
            if not chain or not all(c.stored for c in chain):
                continue
            in_ram = all(c.nbytes_ram > 0 for c in chain)
            on_disk = all(c.on_disk for c in chain)
            tier: Tier = "ram+disk" if in_ram and on_disk else "ram" if in_ram else "disk"
            ram = sum(c.nbytes_ram for c in chain)
            disk = sum(c.nbytes_disk for c in chain if c.on_disk)
            infos.append(EntryInfo(node.key, node.end, ram, disk, tier, node.hits, node.last_use))
        infos.sort(key=lambda info: info.last_use, reverse=True)
        return infos

    def record_span(self, node: Node) -> tuple[str, tuple[int, ...]]:
        """``(parent_key, tokens)`` to write in ``node``'s segment record.

        Trimmable: the parent's key and the node's own span, since its blob is useless
        without the chain above it. Checkpoint: the fingerprint and the whole prefix, since
        its blob is the state of all those tokens; the record then relinks on its own,
        whatever became of the nodes above it.
        """
        if node.trimmable:
            assert node.parent is not None
            return node.parent.key, node.tokens
        prefix = [segment.tokens for segment in reversed(self._ancestry(node))]
        return self.fingerprint, tuple(itertools.chain.from_iterable(prefix))

    def restore(self, records: Iterable[SegmentRecordLike]) -> list[SegmentRecordLike]:
        """Rebuild the tree from the disk tier's records; return the ones skipped.

        Records (written as ``record_span`` says) link to their parent by ``parent_key``;
        ``nbytes`` becomes the node's disk size (0: a branch point without blob). Skipped,
        for the caller to delete: records whose key does not match their tokens, of
        another cache kind, whose parent is missing, that collide with a sibling
        (trimmable) or repeat a stored checkpoint.
        """
        skipped: list[SegmentRecordLike] = []
        by_parent: dict[str, list[SegmentRecordLike]] = defaultdict(list)
        for record in records:
            intact = (
                bool(record.tokens) and segment_key(record.parent_key, record.tokens) == record.key
            )
            if intact and self._trimmable is None:
                self._trimmable = record.trimmable
            if intact and record.trimmable == self._trimmable:
                by_parent[record.parent_key].append(record)
            else:
                skipped.append(record)
        known = {node.key: node for node in self.nodes()}
        known[self._root.key] = self._root
        skipped.extend(self._link_all(by_parent, known))
        skipped.extend(itertools.chain.from_iterable(by_parent.values()))
        return skipped

    def _link_all(
        self, by_parent: dict[str, list[SegmentRecordLike]], known: dict[str, Node]
    ) -> list[SegmentRecordLike]:
        """Link every record whose parent is known, parents first; return collisions."""
        skipped: list[SegmentRecordLike] = []
        queue = [key for key in by_parent if key in known]
        while queue:
            parent = known[queue.pop()]
            # Shorter spans first, so a longer checkpoint span walks through the shorter.
            for record in sorted(by_parent.pop(parent.key, []), key=lambda r: len(r.tokens)):
                node = self._link(parent, record)
                if node is None:
                    skipped.append(record)
                    continue
                known[node.key] = node
                if node.key in by_parent:
                    queue.append(node.key)
        return skipped

    def _link(self, parent: Node, record: SegmentRecordLike) -> Node | None:
        now = self._clock()
        if self._trimmable:
            if record.tokens[0] in parent.children:
                return None
            node = self._add_child(parent, record.tokens, now)
        else:
            node = self._place_checkpoint(parent, record.tokens, now)
            if node.stored:
                return None
        assert node.key == record.key
        node.on_disk, node.nbytes_disk = record.nbytes > 0, record.nbytes
        node.is_boundary, node.last_use = record.is_boundary, now
        return node

    def _place_checkpoint(self, parent: Node, span: tuple[int, ...], now: float) -> Node:
        """The node ending where ``span`` ends below ``parent``, splitting or adding one."""
        node, pos = parent, 0  # ``pos``: tokens of ``span`` placed so far
        while pos < len(span):
            child = node.children.get(span[pos])
            if child is None:
                return self._add_child(node, span[pos:], now)
            m = _common_prefix(child.tokens, span, pos)
            if m < len(child.tokens):
                self._split(child, child.start + m)  # a checkpoint split moves no blob
                child = child.parent
                assert child is not None
            node, pos = child, pos + m
        return node


class IndexRegistry:
    """One ``PrefixIndex`` per model fingerprint, created on first use."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._indexes: dict[str, PrefixIndex] = {}

    def get(self, fingerprint: str) -> PrefixIndex:
        """The index for ``fingerprint``, created empty if there is none yet."""
        if fingerprint not in self._indexes:
            self._indexes[fingerprint] = PrefixIndex(fingerprint, clock=self._clock)
        return self._indexes[fingerprint]

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._indexes

    def fingerprints(self) -> list[str]:
        """Fingerprints that have an index."""
        return list(self._indexes)

    def drop(self, fingerprint: str) -> PrefixIndex | None:
        """Forget a model's index; deleting its blobs is the caller's business."""
        return self._indexes.pop(fingerprint, None)


def _stored_chain(walk: _Walk, cap: int) -> tuple[list[Node], int]:
    """Trimmable match: the chain up to the first segment without a blob, cut at ``cap``."""
    nodes: list[Node] = []
    length = 0
    for node in walk.path + ([walk.partial] if walk.partial else []):
        if not node.stored or length >= cap:
            break
        reach = walk.partial_len if node is walk.partial else len(node.tokens)
        nodes.append(node)
        length = min(node.start + reach, cap)
    return nodes, length


def _deepest_checkpoint(walk: _Walk, cap: int) -> tuple[list[Node], int]:
    for node in reversed(walk.path):
        if node.stored and node.end <= cap:
            return [node], node.end
    return [], 0


def _common_prefix(segment: tuple[int, ...], query: tuple[int, ...], pos: int) -> int:
    """How many leading tokens of ``segment`` equal ``query[pos:]``."""
    if query[pos : pos + len(segment)] == segment:
        return len(segment)  # the common case, compared in C
    for i, (a, b) in enumerate(zip(segment, query[pos:])):
        if a != b:
            return i
    return min(len(segment), len(query) - pos)


def _valid_cuts(boundaries: Sequence[int], length: int, min_tokens: int) -> list[int]:
    cuts = list(boundaries)
    if any(b <= a for a, b in itertools.pairwise(cuts)):
        raise ValueError(f"boundaries must be strictly ascending: {cuts}")
    if cuts and not (0 < cuts[0] and cuts[-1] <= length):
        raise ValueError(f"boundaries must lie in 1..{length}: {cuts}")
    return [cut for cut in cuts if cut >= min_tokens]


def _with_ancestors(nodes: Iterable[Node]) -> list[Node]:
    """``nodes`` and all their ancestors, each once, root excluded."""
    seen: dict[int, Node] = {}
    for node in nodes:
        current: Node | None = node
        while current is not None and current.parent is not None and id(current) not in seen:
            seen[id(current)] = current
            current = current.parent
    return list(seen.values())


def _lru_pops(nodes: Iterable[Node], is_leaf: Callable[[Node], bool]) -> Iterator[Node]:
    """Eviction leaves, least recently used first; a parent may turn into one.

    The consumer must change each yielded node so that it is no longer a leaf.
    """
    order = itertools.count()
    heap = [(n.last_use, -n.end, next(order), n) for n in nodes if is_leaf(n)]
    heapq.heapify(heap)
    while heap:
        node = heapq.heappop(heap)[3]
        if not is_leaf(node):
            continue
        yield node
        parent = node.parent
        if parent is not None and parent.parent is not None and is_leaf(parent):
            heapq.heappush(heap, (parent.last_use, -parent.end, next(order), parent))


def _merge(*groups: list[Node]) -> list[Node]:
    """Concatenate without repeats, first occurrences in order."""
    seen: dict[int, Node] = {}
    for node in itertools.chain(*groups):
        seen.setdefault(id(node), node)
    return list(seen.values())
