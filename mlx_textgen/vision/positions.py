"""Per-sequence rope positions for models whose image tokens shift the text after them.

Qwen2-VL's multimodal rope gives an image fewer position steps than it has tokens, so the
text after it sits at ``offset + rope_delta``. mlx-vlm keeps that delta on the shared model
object (stale for the next call, wrong for a batch), so here it travels with each sequence:
its layer-0 cache carries ``rope_delta``, and when mlx-lm merges caches into a batch the
batch cache's per-row ``offset`` (used only for rope positions; masks and lengths use the
write index and the padding) absorbs each row's delta. The delta is a function of the
prompt's image-aware tokens, so a prompt-cache hit recomputes it rather than storing it.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

from mlx_textgen.backend import BatchKVCache

_installed = False


def set_delta(cache: list[Any], delta: int) -> None:
    """Record a sequence's rope delta on its caches (see the module doc)."""
    if cache:
        cache[0].rope_delta = int(delta)


def delta_of(cache: Any) -> int:
    return int(getattr(cache, "rope_delta", 0))


def install() -> None:
    """Make batch merges carry each row's delta into the batch cache's rope offsets."""
    global _installed
    if _installed:
        return
    plain = BatchKVCache.merge.__func__  # type: ignore[attr-defined]

    def merge(cls: type, caches: list[Any]) -> Any:
        batch = plain(cls, caches)
        deltas = [delta_of(c) for c in caches]
        if any(deltas):
            batch.offset = batch.offset + mx.array(deltas)
        return batch

    BatchKVCache.merge = classmethod(merge)  # type: ignore[method-assign]
    _installed = True


def decode_positions(cache: Any, length: int) -> mx.array:
    """Positions (batch, length) of the next `length` tokens after what `cache` holds."""
    offset = cache.offset
    steps = mx.arange(length)[None]
    if isinstance(offset, mx.array) and offset.ndim > 0:
        return offset[:, None] + steps  # a batch: the deltas are in the offsets
    return steps + (int(offset) + delta_of(cache))
