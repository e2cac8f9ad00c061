"""A segment of the prefix tree (``Node``) and the key that names it (``segment_key``).

Pure Python (no mlx, no numpy); ``index.PrefixIndex`` builds the tree from these nodes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

_U32 = struct.Struct("<I")


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


def common_prefix(segment: tuple[int, ...], query: tuple[int, ...], pos: int) -> int:
    """How many leading tokens of ``segment`` equal ``query[pos:]``."""
    if query[pos : pos + len(segment)] == segment:
        return len(segment)  # the common case, compared in C
    for i, (a, b) in enumerate(zip(segment, query[pos:])):
        if a != b:
            return i
    return min(len(segment), len(query) - pos)
