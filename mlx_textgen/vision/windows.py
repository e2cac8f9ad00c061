"""Qwen2.5-VL's windowed vision attention, without empty windows.

The tower pads each image's merged-patch grid up to whole windows, and when a side is
already a multiple of the window it pads one more whole window: those windows hold no
patch, so the window boundaries repeat. mlx-vlm means to drop the repeats (a ``seen`` set),
but it iterates an MLX array, whose elements hash by identity, so every boundary is kept;
each repeat then becomes a zero-length split and a zero-length attention call. The CPU
backend returns an empty result for that; CUDA's attention died on it with a floating-point
exception (integer division by zero) for Qwen2.5-VL-3B's shape at 448 px. A window with no
patch contributes nothing, so dropping the repeats here is exact.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx


def distinct_bounds(bounds: list[int]) -> list[int]:
    """Cumulative window boundaries with every repeat (an empty window) dropped."""
    out: list[int] = []
    for b in bounds:
        if not out or b != out[-1]:
            out.append(b)
    return out


def install(vision_module: Any) -> None:
    """Patch the module's ``VisionModel.get_window_index`` (once) to return distinct bounds."""
    cls = getattr(vision_module, "VisionModel", None)
    plain = getattr(cls, "get_window_index", None)
    if plain is None or hasattr(plain, "__wrapped__"):
        return

    def get_window_index(self: Any, grid_thw: mx.array) -> tuple[mx.array, mx.array]:
        index, bounds = plain(self, grid_thw)
        return index, mx.array(distinct_bounds(bounds.tolist()), dtype=bounds.dtype)

    get_window_index.__wrapped__ = plain  # type: ignore[attr-defined]
    cls.get_window_index = get_window_index
