"""How much memory a model will take once resident: weights plus its KV headroom.

Estimated before the weights load, from the safetensors headers (shapes and dtypes, never
tensor data) and config.json, so that a model that can't fit the budget is refused before
it is loaded rather than crashing the machine. Pure Python: no MLX, no tensor reads.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4,
                "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}  # fmt: skip
_GB = float(1 << 30)


@dataclass(frozen=True)
class Footprint:
    """Bytes a resident model takes: its weights and the KV cache reserved for it."""

    weights: int
    kv_headroom: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_headroom

    def describe(self) -> str:
        return (f"{self.total / _GB:.2f} GB (weights {self.weights / _GB:.2f}, "
                f"KV headroom {self.kv_headroom / _GB:.2f})")  # fmt: skip


def _header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(size))


def weight_bytes(model_dir: Path, float_weights: bool, bits: int = 4) -> int:
    """Bytes of the weights once loaded; `float_weights`: dequantized and cast to float32;
    `bits`: of the packed quantized weights (config.json's quantization.bits)."""
    total = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        tensors = {k: v for k, v in _header(path).items() if k != "__metadata__"}
        for name, t in tensors.items():
            count = 1
            for d in t["shape"]:
                count *= d
            base = name.rsplit(".", 1)[0]
            if not float_weights:
                total += count * _DTYPE_BYTES.get(t["dtype"], 4)
            elif name.endswith((".scales", ".biases")) and f"{base}.weight" in tensors:
                continue  # folded into the dequantized weight
            elif t["dtype"] == "U32" and f"{base}.scales" in tensors:
                total += count * 32 // bits * 4  # packed ints -> float32
            else:
                total += count * 4
    return total


def kv_bytes_per_token(config: dict[str, Any], float_weights: bool) -> int:
    """Keys and values of one token over every layer."""
    cfg = config.get("text_config") or config
    layers = int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0)
    heads = int(cfg.get("num_attention_heads") or cfg.get("n_head") or 1)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or (cfg.get("hidden_size") or 0) // heads)
    return 2 * layers * kv_heads * head_dim * (4 if float_weights else 2)


def estimate(model_dir: Path, float_weights: bool, context: int, headroom_tokens: int) -> Footprint:
    """The footprint of the model in `model_dir` with KV for min(context, headroom) tokens."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    kv = kv_bytes_per_token(config, float_weights) * min(context, headroom_tokens)
    bits = int((config.get("quantization") or {}).get("bits") or 4)
    return Footprint(weight_bytes(model_dir, float_weights, bits), kv)
