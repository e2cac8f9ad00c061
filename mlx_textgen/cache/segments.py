"""Segment blobs: cutting KV out of mlx-lm caches, putting it back, and numpy for the disk.

A ``Segment`` is the blob of one index node, held as MLX arrays in the RAM tier:

- a KV slice (trimmable caches, every layer a plain ``KVCache``): arrays ``"{layer}.keys"``
  and ``"{layer}.values"`` holding tokens ``[start, end)`` of the node along axis 2;
- a checkpoint (anything else): the whole per-layer ``state`` of the caches at the node's
  end, the protocol mlx-lm's ``save_prompt_cache`` uses. Array leaves of the state tree are
  named ``"{layer}.{path}"`` (``"{layer}"`` when the state is one bare array); scalar leaves
  (offsets, window sizes, class names of nested caches, None) go to ``scalars`` under the
  same names, and ``classes`` records each layer's cache class.

Every array that enters or leaves a segment is copied (``mx.array(x)``): mlx-lm caches grow
and rotate their buffers by slice assignment, which rewrites the very array object a
reference points to, and a plain slice would also keep the whole step-sized buffer alive.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlx_textgen.backend import KVCache

Scalar = int | float | bool | str | None
# numpy has no bfloat16: such arrays travel to the disk tier as uint16 views.
_CARRIED = {"bfloat16": mx.uint16}


@dataclass
class Segment:
    """One node's blob in MLX arrays; ``ntokens`` is the span a KV slice covers."""

    arrays: dict[str, mx.array]
    ntokens: int
    scalars: dict[str, Scalar] = field(default_factory=dict)
    classes: list[str] | None = None  # checkpoints only

    @property
    def is_checkpoint(self) -> bool:
        return self.classes is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (at least 1, so that a stored segment never reads as absent)."""
        return max(1, sum(int(a.nbytes) for a in self.arrays.values()))


def is_trimmable(cache: Sequence[Any]) -> bool:
    """Whether a model's caches are stored as KV slices: every layer a plain ``KVCache``.

    A sliding-window layer (``RotatingKVCache``) forgets old tokens and a state cache has no
    token axis at all, so one such layer turns the whole model to checkpoints.
    """
    return bool(cache) and all(type(c) is KVCache for c in cache)


def uncuttable_classes(cache: Sequence[Any]) -> list[str]:
    """Names of the cache classes that make a model's caches checkpoints (see ``is_trimmable``)."""
    return sorted({type(c).__name__ for c in cache if type(c) is not KVCache})


def cache_length(cache: Sequence[Any]) -> int | None:
    """Tokens the caches hold, where some layer counts them (state caches do not)."""
    for c in cache:
        offset = getattr(c, "offset", None)  # mlx-lm declares no common length accessor
        if isinstance(offset, int):
            return offset
    return None


def storable(
    tokens: Sequence[int], cache: Sequence[Any], boundaries: Sequence[int]
) -> tuple[list[int], list[int]]:
    """``(tokens, boundaries)`` whose prefixes ``cache`` can give segments for.

    KV slices: every boundary up to what the caches hold. Checkpoints: the caches can only
    be captured where prefill stopped, so just their own position, if it is a boundary (the
    engine passes ``[len(tokens)]``), with ``tokens`` cut there.
    """
    held = cache_length(cache)
    limit = len(tokens) if held is None else min(held, len(tokens))
    if is_trimmable(cache):
        return list(tokens), sorted({b for b in boundaries if 0 < b <= limit})
    position = len(tokens) if held is None else held
    if position > len(tokens) or position not in boundaries:
        return list(tokens), []
    return list(tokens[:position]), [position]


def _copy(x: mx.array) -> mx.array:
    return mx.array(x)  # a real copy, unlike a slice or mx.contiguous of a contiguous view


# -- KV slices (trimmable caches) -----------------------------------------------------------


def slice_kv(cache: Sequence[Any], start: int, end: int) -> Segment:
    """Copy tokens ``[start, end)`` of every layer's keys and values."""
    arrays: dict[str, mx.array] = {}
    for i, c in enumerate(cache):
        if c.keys is None or c.offset < end:
            raise ValueError(f"layer {i} holds {c.offset} tokens, not {end}")
        arrays[f"{i}.keys"] = _copy(c.keys[..., start:end, :])
        arrays[f"{i}.values"] = _copy(c.values[..., start:end, :])
    mx.eval(list(arrays.values()))
    return Segment(arrays, end - start)


def tail_kv(segment: Segment, ntokens: int) -> Segment:
    """The last ``ntokens`` of a KV slice, copied (the lower part of a split segment)."""
    if ntokens > segment.ntokens:
        raise ValueError(f"segment holds {segment.ntokens} tokens, not {ntokens}")
    cut = segment.ntokens - ntokens
    arrays = {name: _copy(a[..., cut:, :]) for name, a in segment.arrays.items()}
    mx.eval(list(arrays.values()))
    return Segment(arrays, ntokens)


def restore_kv(
    cache: Sequence[Any], segments: Sequence[Segment], length: int, room: int = 0
) -> None:
    """Fill fresh ``KVCache`` layers with the first ``length`` tokens of a chain of slices.

    The buffers get space for ``room`` more tokens (rounded up to the cache's step), laid
    out in the same copy: otherwise the first tokens after a hit would make every layer
    reallocate and copy its whole KV, which on a CPU costs more than the restore itself."""
    if sum(s.ntokens for s in segments) < length:
        raise ValueError("segments hold fewer tokens than asked for")
    filled: list[mx.array] = []
    for i, c in enumerate(cache):
        step = getattr(c, "step", 256)
        spare = -(-(length + max(room, 0)) // step) * step - length
        keys = _join([s.arrays[f"{i}.keys"] for s in segments], length, spare)
        values = _join([s.arrays[f"{i}.values"] for s in segments], length, spare)
        c.state = (keys, values, length)  # mlx-lm 0.32: (keys, values, offset)
        filled += [keys, values]
    mx.eval(filled)


def _join(parts: list[mx.array], length: int, spare: int = 0) -> mx.array:
    """The first ``length`` tokens of ``parts`` laid end to end in a new array, followed by
    ``spare`` zeroed positions."""
    cut, left = [], length
    for part in parts:
        if left <= 0:
            break
        take = min(left, part.shape[2])
        cut.append(part[..., :take, :])
        left -= take
    if spare > 0:
        shape = (*cut[0].shape[:2], spare, cut[0].shape[3])
        cut.append(mx.zeros(shape, dtype=cut[0].dtype))
    return _copy(cut[0]) if len(cut) == 1 else mx.concatenate(cut, axis=2)


# -- checkpoints (everything else) ----------------------------------------------------------


def snapshot(cache: Sequence[Any], ntokens: int) -> Segment:
    """Copy the full state of every layer: a checkpoint after ``ntokens`` tokens."""
    arrays: dict[str, mx.array] = {}
    scalars: dict[str, Scalar] = {}
    for i, c in enumerate(cache):
        state = c.state
        if type(c) is KVCache and c.keys is not None:
            # Its state is the whole step-sized buffer; the tokens beyond offset are zeros.
            state = (c.keys[..., : c.offset, :], c.values[..., : c.offset, :], c.offset)
        for path, leaf in tree_flatten(state):
            name = f"{i}.{path}" if path else str(i)
            if isinstance(leaf, mx.array):
                arrays[name] = _copy(leaf)
            elif leaf is None or isinstance(leaf, (bool, int, float, str)):
                scalars[name] = leaf
            else:
                raise TypeError(f"layer {i}: cannot store {type(leaf).__name__} at {path!r}")
    mx.eval(list(arrays.values()))
    return Segment(arrays, ntokens, scalars, [type(c).__name__ for c in cache])


def restore_state(cache: Sequence[Any], segment: Segment) -> None:
    """Set fresh caches to a checkpoint; ValueError when the layers do not match."""
    classes = [type(c).__name__ for c in cache]
    if segment.classes != classes:
        raise ValueError(f"checkpoint of {segment.classes}, model has {classes}")
    leaves: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for name, value in [*segment.arrays.items(), *segment.scalars.items()]:
        layer, _, path = name.partition(".")
        copied = _copy(value) if isinstance(value, mx.array) else value
        leaves[int(layer)].append((path, copied))
    for i, c in enumerate(cache):
        c.state = tree_unflatten(leaves[i]) if leaves[i] else []
    mx.eval([a for items in leaves.values() for _, a in items if isinstance(a, mx.array)])


# -- numpy, for the disk tier ---------------------------------------------------------------


def dtype_name(dtype: mx.Dtype) -> str:
    """``mx.float16`` -> ``"float16"``: the dtype strings of the disk tier."""
    return str(dtype).rpartition(".")[2]


def to_numpy(segment: Segment) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """``(arrays, dtypes, meta)`` for ``DiskStore.put``; run it on the MLX thread.

    The arrays view the segment's own memory (no copy), so handing them to the disk
    writer costs the MLX thread nothing; segments are never mutated, and the views keep
    their arrays alive until written."""
    dtypes = {name: dtype_name(x.dtype) for name, x in segment.arrays.items()}
    carried = {
        name: x.view(_CARRIED[dtypes[name]]) if dtypes[name] in _CARRIED else x
        for name, x in segment.arrays.items()
    }
    mx.eval(list(carried.values()))
    arrays = {name: np.asarray(memoryview(x)) for name, x in carried.items()}
    meta = {"ntokens": str(segment.ntokens)}
    if segment.classes is not None:
        meta["classes"] = json.dumps(segment.classes)
        meta["scalars"] = json.dumps(segment.scalars)
    return arrays, dtypes, meta


def from_numpy(
    arrays: dict[str, np.ndarray], dtypes: dict[str, str], meta: dict[str, str]
) -> Segment:
    """The inverse of ``to_numpy``; ValueError, TypeError or KeyError on anything amiss."""
    out: dict[str, mx.array] = {}
    for name, arr in arrays.items():
        dtype = getattr(mx, dtypes[name], None)
        if not isinstance(dtype, mx.Dtype):
            raise TypeError(f"unknown dtype {dtypes[name]!r}")
        x = mx.array(arr)
        out[name] = x.view(dtype) if dtypes[name] in _CARRIED else x
    mx.eval(list(out.values()))
    if "classes" not in meta:
        return Segment(out, int(meta["ntokens"]))
    classes, scalars = json.loads(meta["classes"]), json.loads(meta["scalars"])
    if not isinstance(classes, list) or not isinstance(scalars, dict):
        raise TypeError("bad checkpoint metadata")
    return Segment(out, int(meta["ntokens"]), scalars, classes)
