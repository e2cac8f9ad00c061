"""Tiny synthetic GGUF models of every supported architecture, imported and run.

Each model is written the way llama.cpp's converter writes one (permuted Q/K for llama,
+1 on Gemma norms). The import must give exactly the logits of the mlx-lm model built
from the original HF weights, and, where llama-cpp-python is installed, the logits
llama.cpp itself computes from the GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from mlx_lm.utils import _get_classes

from mlx_textgen.models.gguf import import_gguf
from tests.unit.test_gguf_builders import ARCHS, TinyModel, write_tiny_model

TOKENS = [70, 71, 72, 5, 100, 200, 33, 44, 55, 66, 77, 88, 99, 10]


def logits_of(model: object) -> np.ndarray:
    return np.array(model(mx.array([TOKENS]))[0].astype(mx.float32))  # type: ignore[operator]


def reference_logits(tiny: TinyModel) -> np.ndarray:
    """The mlx-lm model built straight from the HF weights (no GGUF involved)."""
    model_class, args_class = _get_classes(tiny.hf_config)
    model = model_class(args_class.from_dict(tiny.hf_config))
    weights = {k: mx.array(v) for k, v in tiny.hf_weights.items()}
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    model.load_weights(list(weights.items()))
    return logits_of(model)


def llama_cpp_logits(path: Path) -> np.ndarray | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2)
    llm.eval(TOKENS)
    return np.array(llm.scores[: len(TOKENS)])


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_imported_model_matches_hf_reference_and_llama_cpp(arch: str, tmp_path: Path) -> None:
    # A 4-token window on 14 tokens exercises Gemma 3's local layers.
    tiny = write_tiny_model(tmp_path, arch, sliding_window=4 if arch == "gemma3" else None)
    model_dir = import_gguf(tiny.path, tmp_path / "cache", float_weights=True, progress=False)
    model, _ = mlx_lm.load(str(model_dir))
    ours = logits_of(model)
    np.testing.assert_allclose(ours, reference_logits(tiny), atol=1e-4)
    if (theirs := llama_cpp_logits(tiny.path)) is not None:
        np.testing.assert_allclose(ours, theirs, atol=2e-2)


def test_skipping_the_unpermute_would_be_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlx_textgen.models import gguf_arch

    tiny = write_tiny_model(tmp_path, "llama")
    monkeypatch.setattr(gguf_arch.ArchSpec, "qk_heads", lambda self, gguf, name: None)
    model_dir = import_gguf(tiny.path, tmp_path / "cache", float_weights=True, progress=False)
    model, _ = mlx_lm.load(str(model_dir))
    assert np.abs(logits_of(model) - reference_logits(tiny)).max() > 1e-2


MixedDirs = tuple[Path, Path, TinyModel]  # float import, native import, source
MIXED = {
    "token_embd.weight": Q.Q8_0,
    "output.weight": Q.Q5_1,
    "blk.0.attn_q.weight": Q.Q4_0,
    "blk.0.attn_k.weight": Q.Q4_1,
    "blk.0.attn_v.weight": Q.Q8_0,
    "blk.0.attn_output.weight": Q.Q5_0,
    "blk.0.ffn_up.weight": Q.Q6_K,
    "blk.0.ffn_gate.weight": Q.F16,
    "blk.0.ffn_down.weight": Q.Q4_0,
    "blk.1.attn_q.weight": Q.Q6_K,
    "blk.1.ffn_down.weight": Q.BF16,
}


@pytest.fixture(scope="module")
def mixed_dirs(tmp_path_factory: pytest.TempPathFactory) -> MixedDirs:
    tmp = tmp_path_factory.mktemp("mixed")
    tiny = write_tiny_model(tmp, "llama", qtypes=MIXED)
    float_dir = import_gguf(tiny.path, tmp / "cache", float_weights=True, progress=False)
    native_dir = import_gguf(tiny.path, tmp / "cache", float_weights=False, progress=False)
    return float_dir, native_dir, tiny


def test_mixed_quant_file_writes_per_module_quantization(mixed_dirs: MixedDirs) -> None:
    float_dir, native_dir, _ = mixed_dirs
    assert "quantization" not in json.loads((float_dir / "config.json").read_text())
    quant = json.loads((native_dir / "config.json").read_text())["quantization"]
    # Q5_x / Q6_K become 8-bit (the majority here); Q4_x stay 4-bit, Q8_0 stays 8-bit/32.
    assert (quant["group_size"], quant["bits"]) == (64, 8)
    assert quant["model.layers.0.self_attn.q_proj"] == {"group_size": 32, "bits": 4}
    assert quant["model.layers.0.self_attn.k_proj"] == {"group_size": 32, "bits": 4}
    assert quant["model.layers.0.self_attn.v_proj"] == {"group_size": 32, "bits": 8}
    assert quant["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert "model.layers.0.mlp.up_proj" not in quant  # Q6_K -> default 8-bit / 64
    weights = mx.load(str(native_dir / "model.safetensors"))
    assert "model.layers.0.mlp.gate_proj.scales" not in weights  # F16 in the file stays float
    assert "model.layers.1.mlp.down_proj.scales" not in weights  # so does BF16


def test_mixed_quant_native_model_loads_and_tracks_float(mixed_dirs: MixedDirs) -> None:
    float_dir, native_dir, _tiny = mixed_dirs
    native, _ = mlx_lm.load(str(native_dir))
    assert type(native.model.layers[0].self_attn.q_proj).__name__ == "QuantizedLinear"
    assert native.model.layers[0].self_attn.q_proj.bits == 4
    assert native.model.layers[0].mlp.up_proj.bits == 8
    dense, _ = mlx_lm.load(str(float_dir))
    float_logits, native_logits = logits_of(dense), logits_of(native)
    # Native Q4/Q8 blocks are exact; only the re-quantized Q5/Q6 tensors add error.
    assert np.abs(float_logits - native_logits).max() < 0.05 * np.abs(float_logits).max()
    assert (float_logits.argmax(-1) == native_logits.argmax(-1)).mean() >= 0.85


def test_native_blocks_survive_exactly(mixed_dirs: MixedDirs) -> None:
    float_dir, native_dir, _ = mixed_dirs
    dense = mx.load(str(float_dir / "model.safetensors"))
    packed = mx.load(str(native_dir / "model.safetensors"))
    for module in ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"):
        bits = 4 if module.endswith("q_proj") else 8
        restored = mx.dequantize(
            packed[f"{module}.weight"],
            packed[f"{module}.scales"],
            packed[f"{module}.biases"],
            group_size=32,
            bits=bits,
        )
        assert mx.array_equal(restored, dense[f"{module}.weight"]).item(), module


def test_llama3_rope_scaling_loads_and_matches_llama_cpp(tmp_path: Path) -> None:
    from mlx_lm.models.rope_utils import Llama3RoPE

    from mlx_textgen.models.gguf_arch import _llama3_divisors

    scaling = {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    divisors = _llama3_divisors(scaling, 10000.0, ARCHS["llama"]["head_dim"])
    tiny = write_tiny_model(tmp_path, "llama", rope_freqs=divisors)
    model_dir = import_gguf(tiny.path, tmp_path / "cache", float_weights=True, progress=False)
    assert json.loads((model_dir / "config.json").read_text())["rope_scaling"]["factor"] == 8.0
    model, _ = mlx_lm.load(str(model_dir))  # transformers also validates config.json here
    assert isinstance(model.model.layers[0].self_attn.rope, Llama3RoPE)
    if (theirs := llama_cpp_logits(tiny.path)) is not None:
        np.testing.assert_allclose(logits_of(model), theirs, atol=2e-2)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_float_dtype_is_honoured(dtype: str, tmp_path: Path) -> None:
    tiny = write_tiny_model(tmp_path, "qwen3", qtypes={"blk.0.attn_q.weight": Q.Q4_0})
    model_dir = import_gguf(
        tiny.path, tmp_path / "cache", float_weights=True, float_dtype=dtype, progress=False
    )
    weights = mx.load(str(model_dir / "model.safetensors"))
    assert {str(w.dtype) for w in weights.values()} == {f"mlx.core.{dtype}"}
    model, _ = mlx_lm.load(str(model_dir))
    ref = reference_logits(tiny)
    assert np.abs(logits_of(model) - ref).max() < 0.1 * np.abs(ref).max()
