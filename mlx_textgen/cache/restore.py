"""Rebuilding a ``PrefixIndex`` from the disk tier's segment records, and what to write in them."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from mlx_textgen.cache.node import Node, common_prefix, segment_key


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


class RestoreMixin:
    """The restore half of ``PrefixIndex``'s API; PrefixIndex inherits it."""

    # Provided by PrefixIndex.
    fingerprint: str
    _root: Node
    _trimmable: bool | None
    _clock: Callable[[], float]
    nodes: Callable[[], Iterator[Node]]
    _ancestry: Callable[[Node], list[Node]]
    _add_child: Callable[[Node, tuple[int, ...], float], Node]
    _split: Callable[[Node, int], list[Node]]

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
            place = self._below_split(parent, record.tokens)
            if place is None:
                return None
            node = self._add_child(place[0], place[1], now)
        else:
            node = self._place_checkpoint(parent, record.tokens, now)
            if node.stored:
                return None
        assert node.key == record.key
        node.on_disk, node.nbytes_disk = record.nbytes > 0, record.nbytes
        node.is_boundary, node.last_use = record.is_boundary, now
        return node

    @staticmethod
    def _below_split(parent: Node, span: tuple[int, ...]) -> tuple[Node, tuple[int, ...]] | None:
        """Where a trimmable span links: below ``parent``, or below the children whose spans
        are its head (its file was written before its segment was split, and a kill came
        before the rewrite; keys chain per token, so its key still holds). None: it collides."""
        node, rest = parent, span
        while rest and rest[0] in node.children:
            child = node.children[rest[0]]
            n = len(child.tokens)
            if n >= len(rest) or tuple(rest[:n]) != tuple(child.tokens):
                return None
            node, rest = child, rest[n:]
        return (node, rest) if rest else None

    def _place_checkpoint(self, parent: Node, span: tuple[int, ...], now: float) -> Node:
        """The node ending where ``span`` ends below ``parent``, splitting or adding one."""
        node, pos = parent, 0  # ``pos``: tokens of ``span`` placed so far
        while pos < len(span):
            child = node.children.get(span[pos])
            if child is None:
                return self._add_child(node, span[pos:], now)
            m = common_prefix(child.tokens, span, pos)
            if m < len(child.tokens):
                self._split(child, child.start + m)  # a checkpoint split moves no blob
                child = child.parent
                assert child is not None
            node, pos = child, pos + m
        return node
