"""The footprint estimate from safetensors headers and config.json (no tensor data read)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from mlx_textgen.models.memory import estimate, kv_bytes_per_token, weight_bytes


def test_float_and_quantized_weights(tmp_path: Path) -> None:
    save_file({"embed.weight": np.zeros((10, 8), np.float16),
               "proj.weight": np.zeros((16, 8), np.uint32),  # 4-bit: 64 in-features
               "proj.scales": np.zeros((16, 1), np.float16),
               "proj.biases": np.zeros((16, 1), np.float16)}, str(tmp_path / "model.safetensors"))
    stored = 10 * 8 * 2 + 16 * 8 * 4 + 2 * 16 * 2
    assert weight_bytes(tmp_path, float_weights=False) == stored
    assert weight_bytes(tmp_path, float_weights=True, bits=4) == 10 * 8 * 4 + 16 * 64 * 4


def test_kv_headroom_from_config(tmp_path: Path) -> None:
    cfg = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
           "hidden_size": 576}
    assert kv_bytes_per_token(cfg, float_weights=True) == 2 * 30 * 3 * 64 * 4
    assert kv_bytes_per_token({"text_config": cfg}, float_weights=False) == 2 * 30 * 3 * 64 * 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    fp = estimate(tmp_path, True, context=2048, headroom_tokens=16384)
    assert fp.weights == 0 and fp.kv_headroom == 2 * 30 * 3 * 64 * 4 * 2048
    assert "KV headroom" in fp.describe()
