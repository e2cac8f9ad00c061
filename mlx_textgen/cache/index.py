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

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from mlx_textgen.cache import reasons
from mlx_textgen.cache.eviction import EvictionMixin
from mlx_textgen.cache.node import Node, common_prefix, segment_key

# Node, segment_key and SegmentRecordLike were defined here; importers may keep using this module.
from mlx_textgen.cache.restore import RestoreMixin, SegmentRecordLike  # noqa: F401

Tier = Literal["ram", "disk", "ram+disk"]


@dataclass
class Match:
    """What ``match_prefix`` found.

    ``nodes``: the segments whose blobs to load, root first (one node in a checkpoint
    tree). ``length``: query tokens they cover. ``partial``: tokens of the last node used
    (less than its length only when a trimmable segment is cut). ``diverged_at``: where the
    query left the deepest cached path, if it did. ``reason``: why, in the words of
    ``reasons`` ("hit", "no entry", "divergence at token N", or for checkpoints where the
    match had to stop).
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


class _Walk(NamedTuple):
    path: list[Node]  # nodes fully matched, root excluded
    partial: Node | None  # the node the query stopped inside, if any
    partial_len: int  # tokens of ``partial`` that agree with the query
    diverged_at: int | None


class PrefixIndex(EvictionMixin, RestoreMixin):
    """Radix tree of cached segments for one model fingerprint; one thread owns it.

    Matching, inserting, pins and the entry list live here; eviction and replacement in
    ``eviction.EvictionMixin``, restore from disk records in ``restore.RestoreMixin``.
    """

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
        if self._trimmable is False:
            nodes, length = _deepest_checkpoint(walk, cap)
        else:
            nodes, length = _stored_chain(walk, cap)
        match = Match(nodes, length, length - nodes[-1].start if nodes else 0, walk.diverged_at)
        match.reason = self._reason(walk, length, len(query))
        return match

    def _reason(self, walk: _Walk, length: int, prompt_len: int) -> str:
        """What ``match_prefix`` says about its match (see ``reasons``)."""
        if not self._root.children:
            return reasons.NO_ENTRY
        if self._trimmable is False:
            shared = _shared(walk)
            if length > 0:
                return reasons.checkpoint_hit(length, shared, walk.diverged_at)
            return reasons.checkpoint_miss(
                shared, _nearest_stored(walk, self._root, prompt_len - 1), prompt_len
            )
        if length == 0:
            return reasons.trimmable_miss(_shared(walk), prompt_len)
        return reasons.divergence(walk.diverged_at) if walk.diverged_at is not None else reasons.HIT

    def _walk(self, query: tuple[int, ...]) -> _Walk:
        node, pos, path = self._root, 0, []
        while pos < len(query):
            child = node.children.get(query[pos])
            if child is None:
                return _Walk(path, None, 0, pos if node.children else None)
            m = common_prefix(child.tokens, query, pos)
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
            stop = min(pos + common_prefix(child.tokens, query, pos), cuts[i])
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


def _shared(walk: _Walk) -> int:
    """Query tokens that agree with a cached path, stored or not."""
    if walk.partial is not None:
        return walk.partial.start + walk.partial_len
    return walk.path[-1].end if walk.path else 0


def _nearest_stored(walk: _Walk, root: Node, cap: int) -> int | None:
    """End of the shallowest stored checkpoint past the cap or the shared tokens."""
    for node in walk.path:
        if node.stored and node.end > cap:
            return node.end
    below = walk.partial if walk.partial is not None else (walk.path[-1] if walk.path else root)
    stack = [below] if below is walk.partial else list(below.children.values())
    best: int | None = None
    while stack:
        node = stack.pop()
        if node.stored:
            best = node.end if best is None else min(best, node.end)
        else:
            stack.extend(node.children.values())
    return best


def _deepest_checkpoint(walk: _Walk, cap: int) -> tuple[list[Node], int]:
    for node in reversed(walk.path):
        if node.stored and node.end <= cap:
            return [node], node.end
    return [], 0


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
