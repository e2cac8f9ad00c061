"""The prefix index on plain lists of ints: matching, splits, pins, eviction, restore."""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import pytest

from mlx_textgen.cache.index import IndexRegistry, Node, PrefixIndex, segment_key

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # not in the project's test extra yet; the seeded test still runs
    given = None

FP = "model-fp"


class SegmentRecord(NamedTuple):
    """The fields the disk tier's record carries (the store's own type has a few more)."""

    key: str
    parent_key: str
    tokens: tuple[int, ...]
    nbytes: int
    trimmable: bool
    is_boundary: bool


class Clock:
    """Manual monotonic clock: every read is one tick later, so order is unambiguous."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def make(trimmable: bool = True) -> tuple[PrefixIndex, Clock]:
    clock = Clock()
    return PrefixIndex(FP, clock=clock), clock


def store(nodes: Iterable[Node], *, ram: bool = True, disk: bool = False) -> list[Node]:
    """Pretend to store each segment's blob: one byte per token in each tier."""
    nodes = list(nodes)
    for node in nodes:
        node.nbytes_ram = len(node.tokens) if ram else 0
        node.on_disk, node.nbytes_disk = disk, len(node.tokens) if disk else 0
    return nodes


def spans(nodes: Sequence[Node]) -> list[tuple[int, int]]:
    return [(node.start, node.end) for node in nodes]


def record(index: PrefixIndex, node: Node) -> SegmentRecord:
    """The record the disk tier writes for ``node``, as ``record_span`` tells it."""
    parent_key, tokens = index.record_span(node)
    return SegmentRecord(
        node.key, parent_key, tokens, node.nbytes_disk, node.trimmable, node.is_boundary
    )


SYS = list(range(100, 150))  # a 50-token system prompt


# ------------------------------------------------------------------ keys


def test_segment_key_is_the_chained_sha256_and_names_a_prefix() -> None:
    one = hashlib.sha256(FP.encode() + struct.pack("<I", 7)).hexdigest()[:32]
    assert segment_key(FP, [7]) == one
    a, b = [1, 2, 3], [4, 5]
    assert segment_key(segment_key(FP, a), b) == segment_key(FP, a + b)
    assert segment_key("other-model", a) != segment_key(FP, a)
    assert len(segment_key(FP, a)) == 32


# ------------------------------------------------------------------ matching


def test_longest_prefix_match_and_divergence() -> None:
    index, _ = make()
    store(index.insert(list(range(1, 11)), [4, 10], trimmable=True))
    store(index.insert([1, 2, 3, 4, 20, 21, 22], [4, 7], trimmable=True))

    hit = index.match_prefix([1, 2, 3, 4, 20, 21, 22, 99])
    assert (hit.length, hit.reason, hit.diverged_at) == (7, "hit", None)
    assert spans(hit.nodes) == [(0, 4), (4, 7)]

    mid = index.match_prefix([1, 2, 3, 4, 5, 6, 50, 51])
    assert (mid.length, mid.partial, mid.diverged_at) == (6, 2, 6)
    assert mid.reason == "divergence at token 6"
    assert spans(mid.nodes) == [(0, 4), (4, 10)]

    branch = index.match_prefix([1, 2, 3, 4, 77, 78])
    assert (branch.length, branch.diverged_at, branch.reason) == (4, 4, "divergence at token 4")


def test_no_entry() -> None:
    index, _ = make()
    assert index.match_prefix([1, 2, 3]).reason == "no entry"
    store(index.insert([1, 2, 3], [3], trimmable=True))
    miss = index.match_prefix([9, 2, 3])
    assert (miss.length, miss.nodes, miss.diverged_at) == (0, [], 0)
    assert miss.reason == "divergence at token 0"  # entries exist: none starts like this


def test_match_is_capped_at_len_minus_one() -> None:
    index, _ = make()
    store(index.insert(list(range(10)), [5, 10], trimmable=True))
    same = index.match_prefix(list(range(10)))
    assert (same.length, same.partial, same.reason) == (9, 4, "hit")
    at_boundary = index.match_prefix(list(range(6)))
    assert (at_boundary.length, spans(at_boundary.nodes)) == (5, [(0, 5)])
    assert index.match_prefix([0]).length == 0


def test_match_does_not_change_the_tree_and_touch_does() -> None:
    index, _ = make()
    sys_node, msg = store(index.insert(SYS + [1, 2], [50, 52], trimmable=True))
    before = (sys_node.hits, sys_node.last_use)
    match = index.match_prefix(SYS + [1, 2, 3])
    assert (sys_node.hits, sys_node.last_use) == before
    index.touch(match.nodes[-1:])
    assert (msg.hits, sys_node.hits) == (1, 0)
    assert sys_node.last_use == msg.last_use > before[1]  # ancestors count as used


def test_conversations_share_the_system_prompt_segment() -> None:
    index, _ = make()
    created = []
    for conv in range(5):
        message = [1000 + conv * 20 + i for i in range(20)]
        created.append(store(index.insert(SYS + message, [50, 70], trimmable=True)))
    assert [len(c) for c in created] == [2, 1, 1, 1, 1]
    assert len(index) == 6
    assert index.total_bytes_ram() == 50 + 5 * 20
    sys_nodes = {id(index.match_prefix(SYS + [1000 + c * 20] * 3).nodes[0]) for c in range(5)}
    assert len(sys_nodes) == 1


def test_next_turn_hits_everything_before_its_new_message() -> None:
    index, _ = make()
    prompt1 = SYS + [1, 2, 3, 4]
    store(index.insert(prompt1, [50, 54], trimmable=True))
    completion = [7, 8, 9]
    store(index.insert(prompt1 + completion, [50, 54, 57], trimmable=True))
    turn2 = prompt1 + completion + [11, 12, 13]
    match = index.match_prefix(turn2)
    assert (match.length, match.reason, match.diverged_at) == (57, "hit", None)
    assert spans(match.nodes) == [(0, 50), (50, 54), (54, 57)]


# ------------------------------------------------------------------ splits


def test_split_of_a_trimmable_segment_at_a_new_boundary() -> None:
    index, _ = make()
    tokens = list(range(10))
    (old,) = store(index.insert(tokens + [10, 11], [10], trimmable=True), disk=True)
    old_key = old.key
    (child,) = store(index.insert(tokens + [10, 11], [10, 12], trimmable=True))

    top, bottom = index.insert(tokens[:6], [6], trimmable=True)
    assert bottom is old and spans([top, bottom]) == [(0, 6), (6, 10)]
    assert top.key == segment_key(FP, tokens[:6])
    assert bottom.key == old_key and child.key == segment_key(FP, tokens + [10, 11])
    assert top.is_boundary and bottom.is_boundary
    assert not top.stored and not bottom.stored  # the old blob spans both: re-store
    assert index.match_prefix(tokens + [10, 11, 12]).length == 0  # until stored
    store([top, bottom])
    match = index.match_prefix(tokens + [10, 11, 12])
    assert (match.length, spans(match.nodes)) == (12, [(0, 6), (6, 10), (10, 12)])


def test_divergence_inside_a_segment_splits_it() -> None:
    index, _ = make()
    store(index.insert(list(range(10)), [10], trimmable=True))
    created = index.insert([0, 1, 2, 9, 9], [5], trimmable=True)
    assert spans(created) == [(0, 3), (3, 10), (3, 5)]
    assert [n.is_boundary for n in created] == [False, True, True]
    store(created)
    assert index.match_prefix([0, 1, 2, 9, 9, 9]).length == 5
    assert index.match_prefix(list(range(11))).length == 10


def test_insert_validates_boundaries_and_kind() -> None:
    index, _ = make()
    with pytest.raises(ValueError):
        index.insert([1, 2, 3], [2, 2], trimmable=True)
    with pytest.raises(ValueError):
        index.insert([1, 2, 3], [4], trimmable=True)
    index.insert([1, 2, 3], [3], trimmable=True)
    with pytest.raises(ValueError):
        index.insert([1, 2, 3, 4], [4], trimmable=False)


def test_min_tokens_skips_short_boundaries() -> None:
    index, _ = make()
    assert index.insert(list(range(10)), [5, 10], trimmable=True, min_tokens=20) == []
    assert len(index) == 0
    (only,) = index.insert(list(range(30)), [5, 30], trimmable=True, min_tokens=20)
    assert spans([only]) == [(0, 30)]


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_segments_match_only_at_their_end() -> None:
    index, _ = make()
    tokens = list(range(1, 11))
    first, second = store(index.insert(tokens, [4, 10], trimmable=False))

    inside = index.match_prefix(tokens[:8] + [99])
    assert (inside.nodes, inside.length, inside.partial) == ([first], 4, 4)
    assert inside.diverged_at == 8
    assert inside.reason == "divergence at token 8; resumed at the checkpoint at token 4"

    beyond = index.match_prefix(tokens + [11])
    assert (beyond.nodes, beyond.length, beyond.reason) == ([second], 10, "hit")

    exact = index.match_prefix(tokens)  # the cap falls inside the last checkpoint
    assert (exact.nodes, exact.length, exact.reason) == (
        [first],
        4,
        "10 tokens shared; resumed at the checkpoint at token 4",
    )

    none = index.match_prefix([1, 2, 99])
    assert (none.length, none.reason) == (
        0,
        "no checkpoint within the 2 tokens shared with a cached prompt, the nearest is at token 4",
    )
    whole = index.match_prefix(tokens[:4])
    assert whole.reason == (
        "the checkpoint at token 4 covers the whole 4-token prompt (one token must be left to decode)"
    )
    assert index.match_prefix([50, 1]).reason == "divergence at token 0"


def test_checkpoint_split_keeps_the_lower_blob() -> None:
    index, _ = make()
    tokens = list(range(1, 11))
    (old,) = store(index.insert(tokens, [10], trimmable=False))
    top, branch = index.insert(tokens[:6] + [50, 51], [8], trimmable=False)
    assert spans([top, branch, old]) == [(0, 6), (6, 8), (6, 10)]
    assert old.nbytes_ram == 10 and old.parent is top  # still the state at position 10
    assert index.match_prefix(tokens + [11]).nodes == [old]
    store([branch])
    match = index.match_prefix(tokens[:6] + [50, 51, 52])
    assert (match.nodes, match.length) == ([branch], 8)  # past the unstored branch point
    assert index.insert(tokens[:6], [6], trimmable=False) == [top]  # now a boundary: store it
    assert top.is_boundary


# ------------------------------------------------------------------ pins and eviction


def test_pins_prevent_eviction_of_a_node_and_its_ancestors() -> None:
    index, _ = make()
    sys_node, mine = store(index.insert(SYS + [1], [50, 51], trimmable=True))
    (other,) = store(index.insert(SYS + [2], [50, 51], trimmable=True))
    index.inc_lock_ref([mine])
    assert (sys_node.lock_ref, mine.lock_ref, other.lock_ref) == (1, 1, 0)
    assert index.evict_ram(0) == [other]
    assert sys_node.nbytes_ram and mine.nbytes_ram
    assert index.evict_entries(0) == []  # both remaining entries are pinned
    assert mine.parent is sys_node and sys_node.is_boundary
    index.dec_lock_ref([mine])
    with pytest.raises(ValueError):
        index.dec_lock_ref([mine])
    assert set(index.evict_ram(0)) == {mine, sys_node}


def test_pins_survive_a_split() -> None:
    index, _ = make()
    (node,) = store(index.insert(list(range(10)), [10], trimmable=True))
    index.inc_lock_ref([node])
    top, _ = store(index.insert(list(range(4)), [4], trimmable=True))
    assert top.lock_ref == 1
    index.dec_lock_ref([node])
    assert (top.lock_ref, node.lock_ref) == (0, 0)


def test_ram_eviction_is_lru_over_leaves() -> None:
    index, _ = make()
    sys_node, a = store(index.insert(SYS + [1], [50, 51], trimmable=True))
    (b,) = store(index.insert(SYS + [2], [50, 51], trimmable=True))
    (c,) = store(index.insert(SYS + [3], [50, 51], trimmable=True))
    index.touch([a])
    budget = index.total_bytes_ram() - 1
    assert index.evict_ram(budget) == [b]  # oldest leaf; sys is older but has RAM children
    assert index.evict_ram(50) == [c, a]
    assert index.evict_ram(0) == [sys_node]


def test_ram_eviction_keeps_disk_segments_and_prunes_the_rest() -> None:
    index, _ = make()
    sys_node, kept = store(index.insert(SYS + [1], [50, 51], trimmable=True), disk=True)
    (lost,) = store(index.insert(SYS + [2], [50, 51], trimmable=True))  # RAM only
    evicted = index.evict_ram(0)
    assert set(evicted) == {sys_node, kept, lost}
    assert kept.parent is sys_node and lost.parent is None
    assert not lost.stored  # flags cleared: the caller frees every tier
    assert index.total_bytes_ram() == 0
    assert index.match_prefix(SYS + [1, 9]).length == 51
    assert [e.tier for e in index.entries()] == ["disk", "disk"]


def test_disk_eviction_goes_leaf_first_and_removes_subtrees() -> None:
    index, _ = make()
    sys_node, a = store(index.insert(SYS + [1], [50, 51], trimmable=True), ram=False, disk=True)
    (b,) = store(index.insert(SYS + [2], [50, 51], trimmable=True), ram=False, disk=True)
    assert index.evict_disk(51) == [a]
    assert a.parent is None and b.parent is sys_node
    assert set(index.evict_disk(0)) == {b, sys_node}
    assert len(index) == 0


def test_disk_eviction_uses_the_given_size_and_keeps_ram_copies() -> None:
    index, _ = make()
    (node,) = store(index.insert([1, 2, 3], [3], trimmable=True), disk=True)
    assert index.evict_disk(999, nbytes_disk=lambda n: 1000) == [node]
    assert node.parent is not None and node.nbytes_ram == 3 and not node.on_disk


def test_a_segment_without_blob_takes_its_subtree_along() -> None:
    index, _ = make()
    sys_node, a = store(index.insert(SYS + [1], [50, 51], trimmable=True), disk=True)
    sys_node.nbytes_ram, sys_node.on_disk = 0, False  # its blob was lost
    assert set(index.prune()) == {sys_node, a}
    assert len(index) == 0


def test_checkpoint_prune_keeps_branch_points_with_children() -> None:
    index, _ = make()
    sys_node, a = store(index.insert(SYS + [1], [50, 51], trimmable=False))
    sys_node.nbytes_ram = 0
    assert index.prune() == []
    a.nbytes_ram = 0
    assert index.prune() == [a, sys_node]


def test_max_entries_drops_the_least_recently_used() -> None:
    index, _ = make()
    leaves = []
    for conv in range(4):
        leaves += store(index.insert(SYS + [conv], [50, 51], trimmable=True))[-1:]
    index.touch([leaves[0]])
    assert len([n for n in index.nodes() if n.is_boundary]) == 5
    removed = index.evict_entries(3)
    assert removed == [leaves[1], leaves[2]]
    assert all(not n.stored for n in removed)
    assert index.evict_entries(3) == []
    assert index.match_prefix(SYS + [0, 5]).length == 51


def test_pinned_nodes_are_never_pending_pruned() -> None:
    index, _ = make()
    created = index.insert([1, 2, 3], [3], trimmable=True)
    index.inc_lock_ref(created)
    assert index.evict_ram(0) == [] and len(index) == 1  # pinned until stored
    index.dec_lock_ref(created)
    assert index.prune() == created


# ------------------------------------------------------------------ replacement


def test_replace_threshold_and_max_reprocess_tokens() -> None:
    prompt = SYS + list(range(40))  # 90 tokens
    old = prompt + [7] * 10  # an earlier completion: 100 tokens
    new = prompt + [8] * 10  # its regeneration

    def fresh() -> PrefixIndex:
        index, _ = make()
        store(index.insert(old, [50, 90, 100], trimmable=True))
        store(index.insert(new, [50, 90, 100], trimmable=True))
        return index

    def candidates(threshold: float, reprocess: int) -> list[tuple[int, int]]:
        found = fresh().replace_candidates(
            new, replace_threshold=threshold, max_reprocess_tokens=reprocess
        )
        return spans(found)

    assert candidates(0.85, 20) == [(90, 100)]  # 90 of 100 shared, 10-token tail
    assert candidates(0.95, 20) == []  # shares too little
    assert candidates(0.85, 5) == []  # tail too long to recompute
    index = fresh()
    removed = index.drop_replaced(new, replace_threshold=0.85, max_reprocess_tokens=20)
    assert spans(removed) == [(90, 100)] and removed[0].tokens == (7,) * 10
    assert len(index) == 3
    assert index.match_prefix(old).length == 90
    assert index.match_prefix(new + [1]).length == 100


def test_prefix_entries_and_pinned_entries_are_not_replaced() -> None:
    index, _ = make()
    short = store(index.insert(SYS + [1, 2], [50, 52], trimmable=True))
    store(index.insert(SYS + [1, 2, 3, 4], [50, 52, 54], trimmable=True))
    assert (
        index.replace_candidates(SYS + [1, 2, 3, 4], replace_threshold=0.0, max_reprocess_tokens=99)
        == []
    )
    assert (
        index.replace_candidates(SYS + [1, 2], replace_threshold=0.0, max_reprocess_tokens=99) == []
    )
    (other,) = store(index.insert(SYS + [1, 2, 9], [50, 52, 53], trimmable=True))
    index.inc_lock_ref([other])
    found = index.replace_candidates(
        SYS + [1, 2, 3, 4], replace_threshold=0.9, max_reprocess_tokens=9
    )
    assert found == [] and short[1].is_boundary


# ------------------------------------------------------------------ admin


def test_entries_report_tokens_bytes_and_tier() -> None:
    index, _ = make()
    sys_node, a = store(index.insert(SYS + [1, 2], [50, 52], trimmable=True), disk=True)
    (b,) = store(index.insert(SYS + [3], [50, 51], trimmable=True))
    index.touch([b])
    pending = index.insert(SYS + [4], [50, 51], trimmable=True)  # not stored: not listed
    assert len(pending) == 1
    by_key = {e.key: e for e in index.entries()}
    # Most recent first; inserting the pending one used the system prompt last.
    assert list(by_key) == [sys_node.key, b.key, a.key]
    assert (by_key[b.key].tokens, by_key[b.key].nbytes_ram, by_key[b.key].tier) == (51, 51, "ram")
    assert by_key[b.key].hits == 1
    assert (by_key[a.key].nbytes_disk, by_key[a.key].tier) == (52, "ram+disk")
    a.nbytes_ram = 0
    assert {e.key: e.tier for e in index.entries()}[a.key] == "disk"


def test_registry_keeps_one_index_per_fingerprint() -> None:
    registry = IndexRegistry()
    first = registry.get("a")
    assert registry.get("a") is first and registry.get("b") is not first
    assert "a" in registry and sorted(registry.fingerprints()) == ["a", "b"]
    assert registry.drop("a") is first and "a" not in registry


# ------------------------------------------------------------------ restore


def test_restore_relinks_by_parent_key_and_reports_orphans() -> None:
    index, _ = make()
    store(index.insert(SYS + [1, 2], [50, 52], trimmable=True), ram=False, disk=True)
    store(index.insert(SYS + [3, 4, 5], [50, 53], trimmable=True), ram=False, disk=True)
    records = [record(index, n) for n in index.nodes()]
    orphan = SegmentRecord(segment_key("gone", [9]), "gone", (9,), 1, True, True)
    orphan_child = SegmentRecord(segment_key(orphan.key, [8]), orphan.key, (8,), 1, True, True)
    corrupt = records[0]._replace(tokens=(5, 5))
    random.Random(0).shuffle(records)

    restored, _ = make()
    skipped = restored.restore([orphan_child, *records, orphan, corrupt])
    assert set(skipped) == {orphan, orphan_child, corrupt}
    assert len(restored) == 3 and restored.trimmable is True
    match = restored.match_prefix(SYS + [3, 4, 5, 6])
    assert (match.length, spans(match.nodes)) == (53, [(0, 50), (50, 53)])
    assert all(n.on_disk and n.nbytes_disk == len(n.tokens) for n in match.nodes)
    assert {e.key for e in restored.entries()} == {e.key for e in index.entries()}


def test_restore_links_a_file_written_before_its_split_below_the_new_head() -> None:
    """A kill after a split's new head was written but before the tail's file was
    rewritten leaves the old, longer file: it still restores, below the head."""
    index, _ = make()
    (whole,) = store(index.insert(SYS + [1, 2, 3], [53], trimmable=True), disk=True)
    old_file = record(index, whole)  # spans the whole prompt: (fp, SYS + [1, 2, 3])
    head, *_ = store(index.insert(SYS + [7], [50, 51], trimmable=True), disk=True)
    assert spans([head]) == [(0, 50)] and head.key != whole.key
    restored, _ = make()
    assert restored.restore([old_file, record(index, head)]) == []
    match = restored.match_prefix(SYS + [1, 2, 3, 4])
    assert spans(match.nodes) == [(0, 50), (50, 53)]
    assert match.nodes[1].key == whole.key  # keys chain per token: the old key holds
    # A true collision (same first token, not a head of it) is still skipped.
    clash = SegmentRecord(segment_key(FP, SYS[:10] + [9]), FP, tuple(SYS[:10] + [9]), 1, True, True)
    assert restored.restore([clash]) == [clash]


def test_restore_skips_records_of_another_kind() -> None:
    index, _ = make()
    store(index.insert([1, 2, 3], [3], trimmable=True), disk=True)
    rec = record(index, next(index.nodes()))
    other, _ = make()
    other.insert([5, 6], [2], trimmable=False)
    assert other.restore([rec]) == [rec]


def test_checkpoint_records_carry_their_whole_prefix() -> None:
    index, _ = make()
    tokens = list(range(1, 11))
    first, old = store(index.insert(tokens, [3, 10], trimmable=False), ram=False, disk=True)
    assert index.record_span(old) == (FP, tuple(tokens))
    _top, branch = index.insert(tokens[:6] + [50, 51], [8], trimmable=False)
    store([branch], ram=False, disk=True)  # the branch point at 6 never gets a blob
    assert index.record_span(branch) == (FP, tuple(tokens[:6] + [50, 51]))
    assert index.record_span(first) == (FP, tuple(tokens[:3]))

    restored, _ = make()  # the checkpoint at 3 is gone from disk: the others still link
    assert restored.restore([record(index, branch), record(index, old)]) == []
    assert restored.match_prefix(tokens[:6] + [50, 51, 52]).length == 8
    assert restored.match_prefix(tokens + [11]).length == 10
    assert spans(sorted(restored.nodes(), key=lambda n: (n.start, n.end))) == [
        (0, 6),
        (6, 8),
        (6, 10),
    ]


# ------------------------------------------------------------------ properties


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _check_trimmable(inserts: list[tuple[list[int], list[int]]], query: list[int]) -> None:
    index, _ = make()
    for seq, cuts in inserts:
        store(index.insert(seq, cuts, trimmable=True))
    best = max((_lcp(query, seq[: cuts[-1]]) for seq, cuts in inserts), default=0)
    match = index.match_prefix(query)
    assert match.length == max(0, min(best, len(query) - 1))
    position = 0
    for node in match.nodes:  # a contiguous chain whose keys name its prefixes
        assert node.start == position
        assert node.key == segment_key(FP, query[:position] + list(node.tokens))
        position = node.end
    assert match.length == (match.nodes[-1].start + match.partial if match.nodes else 0)


def _check_checkpoint(inserts: list[tuple[list[int], list[int]]], query: list[int]) -> None:
    index, _ = make()
    for seq, cuts in inserts:
        store(n for n in index.insert(seq, cuts, trimmable=False) if n.is_boundary)
    ends = [c for seq, cuts in inserts for c in cuts if c < len(query) and seq[:c] == query[:c]]
    match = index.match_prefix(query)
    assert match.length == max(ends, default=0)
    assert len(match.nodes) == (1 if ends else 0)


def _random_case(rng: random.Random) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    inserts = []
    for _ in range(rng.randint(0, 5)):
        seq = [rng.randint(0, 2) for _ in range(rng.randint(1, 10))]
        cuts = sorted(rng.sample(range(1, len(seq) + 1), rng.randint(1, len(seq))))
        inserts.append((seq, cuts))
    return inserts, [rng.randint(0, 2) for _ in range(rng.randint(0, 12))]


def test_match_length_property_seeded() -> None:
    rng = random.Random(1234)
    for _ in range(400):
        inserts, query = _random_case(rng)
        _check_trimmable(inserts, query)
        _check_checkpoint(inserts, query)


if given is not None:

    @st.composite
    def _inserted(draw: st.DrawFn) -> tuple[list[int], list[int]]:
        seq = draw(st.lists(st.integers(0, 2), min_size=1, max_size=10))
        cuts = draw(st.sets(st.integers(1, len(seq)), min_size=1))
        return seq, sorted(cuts)

    _cases = (st.lists(_inserted(), max_size=5), st.lists(st.integers(0, 2), max_size=12))

    @settings(max_examples=200, deadline=None)
    @given(*_cases)
    def test_match_length_is_the_longest_common_prefix(
        inserts: list[tuple[list[int], list[int]]], query: list[int]
    ) -> None:
        _check_trimmable(inserts, query)

    @settings(max_examples=200, deadline=None)
    @given(*_cases)
    def test_checkpoint_match_is_the_deepest_boundary(
        inserts: list[tuple[list[int], list[int]]], query: list[int]
    ) -> None:
        _check_checkpoint(inserts, query)
