"""Decode GGUF tensor data into MLX arrays.

Three routes, by quant type:
- float types (F32, F16, BF16): read as they are;
- Q4_0, Q4_1, Q8_0: repacked block by block into MLX's affine layout (weight, scales,
  biases; group size 32), bit-exact, so a quantized file stays quantized;
- every other type the `gguf` package can dequantize (Q5_x, K-quants, IQ types):
  dequantized to float32, to be re-quantized by the caller if it wants.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import mlx.core as mx
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf import quants as gguf_quants

from mlx_textgen.models.gguf_file import GGUFImportError, GGUFTensor

Q = GGMLQuantizationType
FLOAT_TYPES = frozenset({Q.F32, Q.F16, Q.BF16})
# GGUF block formats that are exactly an MLX affine quantization with group size 32.
NATIVE_BITS = {Q.Q4_0: 4, Q.Q4_1: 4, Q.Q8_0: 8}
NATIVE_GROUP_SIZE = 32
# Re-quantization of other types: 8 bits keeps >= 5-bit sources near-lossless,
# 4 bits matches the size of <= 4-bit sources.
REQUANT_GROUP_SIZE = {8: 64, 4: 32}

RowFn = Callable[[mx.array], mx.array]


@dataclass(frozen=True)
class AffineWeight:
    """A weight in MLX's affine quantized layout (as `mx.quantize` returns it)."""

    weight: mx.array
    scales: mx.array
    biases: mx.array
    bits: int
    group_size: int

    def dequantize(self) -> mx.array:
        return mx.dequantize(
            self.weight, self.scales, self.biases, group_size=self.group_size, bits=self.bits
        )

    def map_rows(self, fn: RowFn) -> AffineWeight:
        """Apply a row permutation to weight, scales and biases alike."""
        return AffineWeight(
            fn(self.weight), fn(self.scales), fn(self.biases), self.bits, self.group_size
        )

    def astype(self, dtype: mx.Dtype) -> AffineWeight:
        return AffineWeight(
            self.weight,
            self.scales.astype(dtype),
            self.biases.astype(dtype),
            self.bits,
            self.group_size,
        )


def source_bits(qtype: GGMLQuantizationType) -> int:
    """Nominal bits per weight of a quant type, from its name (Q5_K -> 5, IQ2_XS -> 2)."""
    if m := re.match(r"^(?:I|T)?Q(\d)", qtype.name):
        return int(m.group(1))
    if qtype.name.endswith("FP4"):
        return 4
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    return int(type_size * 8 / block_size)


def requant_bits(qtype: GGMLQuantizationType) -> int:
    """Bits to re-quantize a dequantized `qtype` tensor to: 8 for >= 5-bit sources, else 4."""
    return 8 if source_bits(qtype) >= 5 else 4


@cache
def is_supported(qtype: GGMLQuantizationType) -> bool:
    """Whether this importer can read tensors of `qtype` at all."""
    if qtype in FLOAT_TYPES or qtype in NATIVE_BITS:
        return True
    if qtype not in GGML_QUANT_SIZES:
        return False
    # Probe the gguf package with one all-zero block rather than reading its private registry.
    try:
        gguf_quants.dequantize(np.zeros((1, GGML_QUANT_SIZES[qtype][1]), np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def decode_float(t: GGUFTensor) -> mx.array:
    """A float tensor (F32/F16/BF16) as an MLX array of its own precision."""
    if t.qtype == Q.F32:
        return mx.array(np.asarray(t.data, dtype=np.float32).reshape(t.shape))
    if t.qtype == Q.F16:
        return mx.array(np.asarray(t.data, dtype=np.float16).reshape(t.shape))
    if t.qtype == Q.BF16:
        # bfloat16 is the upper half of a float32; widen without rounding.
        bits16 = np.ascontiguousarray(t.data).view(np.uint16).reshape(t.shape)
        as_f32 = (bits16.astype(np.uint32) << 16).view(np.float32)
        return mx.array(as_f32).astype(mx.bfloat16)
    raise AssertionError(f"{t.type_name} is not a float type")


def decode_native(t: GGUFTensor) -> AffineWeight:
    """Repack a Q4_0/Q4_1/Q8_0 tensor into MLX affine layout without loss."""
    block_size, type_size = GGML_QUANT_SIZES[t.qtype]
    rows, cols = _rows_cols(t)
    blocks = np.ascontiguousarray(t.data).reshape(rows, cols // block_size, type_size)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0]
    if t.qtype == Q.Q8_0:
        # int8 q in [-128, 127] becomes unsigned q + 128 with bias -128 d.
        q = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        packed, biases = q, d * np.float16(-128)
    else:
        if t.qtype == Q.Q4_0:
            nibbles, biases = blocks[..., 2:], d * np.float16(-8)
        else:  # Q4_1 stores its minimum m directly: x = d q + m
            nibbles, biases = blocks[..., 4:], blocks[..., 2:4].copy().view(np.float16)[..., 0]
        # GGUF keeps element j in the low nibble of byte j and element j+16 in its high
        # nibble; MLX packs consecutive elements low-nibble first.
        q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)
        packed = q[..., 0::2] | (q[..., 1::2] << 4)
    weight = np.ascontiguousarray(packed).reshape(rows, -1).view(np.uint32)
    return AffineWeight(
        weight=mx.array(weight.reshape(*t.shape[:-1], -1)),
        scales=mx.array(d.reshape(*t.shape[:-1], -1)),
        biases=mx.array(np.asarray(biases).reshape(*t.shape[:-1], -1)),
        bits=NATIVE_BITS[t.qtype],
        group_size=NATIVE_GROUP_SIZE,
    )


def dequantize_other(t: GGUFTensor) -> mx.array:
    """Dequantize any other quant type to float32 with the `gguf` package (numpy)."""
    try:
        values = gguf_quants.dequantize(np.asarray(t.data), t.qtype)
    except NotImplementedError as e:
        raise GGUFImportError(
            f"tensor {t.name!r} uses quant type {t.type_name}, which can't be dequantized"
        ) from e
    return mx.array(values.reshape(t.shape).astype(np.float32, copy=False))


def requantize(values: mx.array, bits: int) -> AffineWeight:
    """Affine-quantize a float weight matrix for MLX."""
    group_size = REQUANT_GROUP_SIZE[bits]
    if values.shape[-1] % group_size:
        group_size = NATIVE_GROUP_SIZE
    weight, scales, biases = mx.quantize(values, group_size=group_size, bits=bits)
    return AffineWeight(weight, scales, biases, bits, group_size)


def _rows_cols(t: GGUFTensor) -> tuple[int, int]:
    cols = t.shape[-1]
    return int(np.prod(t.shape[:-1], dtype=np.int64)), cols
