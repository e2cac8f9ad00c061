"""Eviction and replacement for ``PrefixIndex``: which segments and entries to drop.

Every method clears residency (or the boundary) on the nodes it returns; the caller then
frees every blob the index no longer lists, as ``index`` describes. Pinned nodes
(``lock_ref > 0``) are never dropped.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from mlx_textgen.cache.node import Node

if TYPE_CHECKING:
    from mlx_textgen.cache.index import _Walk


class EvictionMixin:
    """The eviction half of ``PrefixIndex``'s API; PrefixIndex inherits it."""

    # Provided by PrefixIndex.
    _root: Node
    _trimmable: bool | None
    nodes: Callable[[], Iterator[Node]]
    total_bytes_ram: Callable[[], int]
    _walk: Callable[[tuple[int, ...]], _Walk]

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
