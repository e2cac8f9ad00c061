"""Convert a GGUF file's tensors into mlx-lm safetensors shards plus a quantization config.

Each tensor is decoded (see gguf_quant), renamed (see gguf_arch), has llama.cpp's
converter tweaks undone, and is then written either as float or as MLX affine
quantized weight/scales/biases.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from tqdm import tqdm

from mlx_textgen.models.gguf_arch import ArchSpec, unpermute_rows
from mlx_textgen.models.gguf_file import GGUFFile, GGUFImportError, GGUFTensor
from mlx_textgen.models.gguf_quant import (
    FLOAT_TYPES,
    NATIVE_BITS,
    AffineWeight,
    decode_float,
    decode_native,
    dequantize_other,
    is_supported,
    requant_bits,
    requantize,
)

FLOAT_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
SHARD_BYTES = 2 << 30  # mlx-lm writes ~5 GB shards; smaller keeps peak memory down


@dataclass(frozen=True)
class ConvertOptions:
    """How to write weights: all float, or keep/produce quantized matrices."""

    float_weights: bool
    float_dtype: str = "float32"

    @property
    def dtype(self) -> mx.Dtype:
        return FLOAT_DTYPES[self.float_dtype]


@dataclass
class ConvertedWeights:
    """What the weight conversion wrote into a model directory."""

    files: list[str] = field(default_factory=list)
    # module path -> (group_size, bits) for every quantized module
    quantized: dict[str, tuple[int, int]] = field(default_factory=dict)

    def quantization_config(self) -> dict[str, Any] | None:
        """mlx-lm's config.json "quantization" entry, with per-module overrides for a mix."""
        if not self.quantized:
            return None
        (group_size, bits), _ = Counter(self.quantized.values()).most_common(1)[0]
        config: dict[str, Any] = {"group_size": group_size, "bits": bits, "mode": "affine"}
        for module, (g, b) in sorted(self.quantized.items()):
            if (g, b) != (group_size, bits):
                config[module] = {"group_size": g, "bits": b}
        return config


def check_tensors(gguf: GGUFFile, spec: ArchSpec) -> None:
    """Fail before any work on an unsupported quant type or an unmappable tensor name."""
    for t in gguf.tensors.values():
        if not is_supported(t.qtype):
            raise GGUFImportError(f"tensor {t.name!r} uses unsupported quant type {t.type_name}")
        spec.hf_name(t.name)


def convert_weights(
    gguf: GGUFFile, spec: ArchSpec, out_dir: Path, options: ConvertOptions, progress: bool
) -> ConvertedWeights:
    """Convert every tensor and write model*.safetensors shards into `out_dir`."""
    result = ConvertedWeights()
    writer = _ShardWriter(out_dir)
    names = list(gguf.tensors)
    for gguf_name in tqdm(
        names, desc="Converting GGUF tensors", unit="tensor", disable=not progress
    ):
        hf_name = spec.hf_name(gguf_name)
        if hf_name is None:
            continue
        arrays = convert_tensor(gguf, spec, gguf.tensors[gguf_name], hf_name, options)
        if isinstance(arrays, AffineWeight):
            module = hf_name.removesuffix(".weight")
            result.quantized[module] = (arrays.group_size, arrays.bits)
            writer.add(module + ".weight", arrays.weight)
            writer.add(module + ".scales", arrays.scales)
            writer.add(module + ".biases", arrays.biases)
        else:
            writer.add(hf_name, arrays)
    result.files = writer.close()
    return result


def convert_tensor(
    gguf: GGUFFile, spec: ArchSpec, t: GGUFTensor, hf_name: str, options: ConvertOptions
) -> mx.array | AffineWeight:
    """One GGUF tensor as the float array or affine weight the MLX model expects."""
    quantizable = (
        not options.float_weights
        and len(t.shape) == 2
        and hf_name.endswith(".weight")
        and not spec.is_norm(hf_name)
    )
    heads = spec.qk_heads(gguf, hf_name)

    def fix_rows(x: mx.array) -> mx.array:
        return unpermute_rows(x, heads) if heads else x

    if t.qtype in NATIVE_BITS:
        packed = decode_native(t).map_rows(fix_rows)
        if quantizable:
            return packed.astype(options.dtype)
        values = packed.astype(mx.float32).dequantize()
    elif t.qtype in FLOAT_TYPES:
        values = fix_rows(decode_float(t))  # a float tensor in the file stays float
    else:
        values = fix_rows(dequantize_other(t))
        if quantizable:
            return requantize(values, requant_bits(t.qtype)).astype(options.dtype)
    if spec.norm_offset and spec.is_norm(hf_name):
        values = values.astype(mx.float32) - spec.norm_offset
    return values.astype(options.dtype)


class _ShardWriter:
    """Accumulates arrays and flushes them to numbered safetensors files by size."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.pending: dict[str, mx.array] = {}
        self.pending_bytes = 0
        self.shards: list[list[str]] = []  # names per written shard, in order

    def add(self, name: str, array: mx.array) -> None:
        self.pending[name] = array
        self.pending_bytes += array.nbytes
        if self.pending_bytes >= SHARD_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        index = len(self.shards) + 1
        mx.save_safetensors(
            str(self.out_dir / f"shard-{index:05d}.safetensors"), self.pending, {"format": "mlx"}
        )
        self.shards.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Give shards their final names (and an index when there are several)."""
        self._flush()
        total = len(self.shards)
        if total == 1:
            names = ["model.safetensors"]
        else:
            names = [f"model-{i:05d}-of-{total:05d}.safetensors" for i in range(1, total + 1)]
        weight_map = {}
        for i, (final, tensors) in enumerate(zip(names, self.shards), start=1):
            (self.out_dir / f"shard-{i:05d}.safetensors").rename(self.out_dir / final)
            weight_map.update({name: final for name in tensors})
        if total > 1:
            index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return names
