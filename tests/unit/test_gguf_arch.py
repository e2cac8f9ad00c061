"""GGUF architecture mapping: Q/K permutation, tensor names, config.json, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType

from mlx_textgen.models.gguf import GGUFImportError, import_gguf
from mlx_textgen.models.gguf_arch import (
    SPECS,
    _llama3_divisors,
    permute_rows,
    unpermute_rows,
)
from mlx_textgen.models.gguf_file import GGUFFile, GGUFTensor
from tests.unit.test_gguf_builders import write_minimal_gguf


@pytest.mark.parametrize("n_heads, head_dim, cols", [(4, 8, 16), (3, 64, 5), (1, 2, 1)])
def test_permute_then_unpermute_round_trips(n_heads: int, head_dim: int, cols: int) -> None:
    w = np.arange(n_heads * head_dim * cols, dtype=np.float32).reshape(n_heads * head_dim, cols)
    permuted = permute_rows(w, n_heads)
    assert not np.array_equal(permuted, w) or head_dim == 2
    np.testing.assert_array_equal(unpermute_rows(permuted, n_heads), w)
    bias = np.arange(n_heads * head_dim, dtype=np.float32)
    np.testing.assert_array_equal(unpermute_rows(permute_rows(bias, n_heads), n_heads), bias)


def test_permutation_interleaves_rotary_halves() -> None:
    # One head of 4 rows: HF keeps halves [a0 a1 | b0 b1]; llama.cpp interleaves them.
    rows = np.array(["a0", "a1", "b0", "b1"])
    assert permute_rows(rows, 1).tolist() == ["a0", "b0", "a1", "b1"]
    assert unpermute_rows(np.array(["a0", "b0", "a1", "b1"]), 1).tolist() == rows.tolist()


def test_mlx_arrays_unpermute_like_numpy() -> None:
    import mlx.core as mx

    w = np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32)
    np.testing.assert_array_equal(np.array(unpermute_rows(mx.array(w), 3)), unpermute_rows(w, 3))


@pytest.mark.parametrize(
    "arch, gguf_name, hf_name",
    [
        ("llama", "blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight"),
        ("llama", "blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight"),
        ("llama", "output.weight", "lm_head.weight"),
        ("llama", "output_norm.weight", "model.norm.weight"),
        ("qwen2", "blk.1.attn_v.bias", "model.layers.1.self_attn.v_proj.bias"),
        ("qwen3", "blk.2.attn_k_norm.weight", "model.layers.2.self_attn.k_norm.weight"),
        ("gemma2", "blk.0.ffn_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight"),
        (
            "gemma2",
            "blk.0.post_attention_norm.weight",
            "model.layers.0.post_attention_layernorm.weight",
        ),
        (
            "gemma3",
            "blk.5.post_ffw_norm.weight",
            "model.layers.5.post_feedforward_layernorm.weight",
        ),
        ("gemma2", "output.weight", None),
        ("llama", "rope_freqs.weight", None),
    ],
)
def test_tensor_names_map_to_mlx_lm_names(arch: str, gguf_name: str, hf_name: str | None) -> None:
    assert SPECS[arch].hf_name(gguf_name) == hf_name


def test_unknown_tensor_name_is_refused() -> None:
    with pytest.raises(GGUFImportError, match="blk.0.ssm_conv1d.weight"):
        SPECS["llama"].hf_name("blk.0.ssm_conv1d.weight")


def test_only_llama_q_and_k_are_unpermuted() -> None:
    gguf = GGUFFile(
        Path("x.gguf"),
        {
            "general.architecture": "llama",
            "llama.attention.head_count": 8,
            "llama.attention.head_count_kv": 2,
        },
    )
    llama = SPECS["llama"]
    assert llama.qk_heads(gguf, "model.layers.0.self_attn.q_proj.weight") == 8
    assert llama.qk_heads(gguf, "model.layers.0.self_attn.k_proj.bias") == 2
    assert llama.qk_heads(gguf, "model.layers.0.self_attn.v_proj.weight") is None
    assert SPECS["qwen2"].qk_heads(gguf, "model.layers.0.self_attn.q_proj.weight") is None


def test_unsupported_architecture_is_refused_by_name(tmp_path: Path) -> None:
    path = write_minimal_gguf(tmp_path / "bert.gguf", "bert")
    with pytest.raises(GGUFImportError, match="'bert'"):
        import_gguf(path, tmp_path / "cache", float_weights=True, progress=False)
    assert not [p for p in (tmp_path / "cache" / "gguf").iterdir() if p.is_dir()]


def test_llama3_rope_freqs_become_rope_scaling(tmp_path: Path) -> None:
    from mlx_textgen.models.gguf_arch import build_config

    scaling = {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    divisors = _llama3_divisors(scaling, 500000.0, 128).astype(np.float32)
    assert divisors.min() == 1.0 and divisors.max() == 8.0  # both ends of the ramp occur
    meta = {
        "general.architecture": "llama",
        "llama.embedding_length": 256,
        "llama.block_count": 1,
        "llama.feed_forward_length": 512,
        "llama.attention.head_count": 2,
        "llama.rope.freq_base": 500000.0,
    }
    tensors = {
        "token_embd.weight": GGUFTensor("token_embd.weight", _f32(), (10, 256), np.zeros(1)),
        "rope_freqs.weight": GGUFTensor("rope_freqs.weight", _f32(), (64,), divisors),
    }
    config = build_config(GGUFFile(Path("x.gguf"), meta, tensors), SPECS["llama"])
    assert config["rope_scaling"]["rope_type"] == "llama3"
    assert config["rope_scaling"]["factor"] == 8.0
    assert config["head_dim"] == 128 and config["tie_word_embeddings"] is True


def test_gemma_query_scale_follows_llama_cpp() -> None:
    from mlx_textgen.models.gguf_arch import _gemma_query_scalar

    def meta(layers: int) -> GGUFFile:
        return GGUFFile(
            Path("g.gguf"),
            {
                "general.architecture": "gemma2",
                "gemma2.block_count": layers,
                "gemma2.embedding_length": 4608,
                "gemma2.attention.head_count": 32,
                "gemma2.attention.key_length": 128,
            },
        )

    assert _gemma_query_scalar(meta(46), big_model_layers=46) == 144  # 27B: hidden / heads
    assert _gemma_query_scalar(meta(42), big_model_layers=46) == 128  # others: head_dim


def _f32() -> GGMLQuantizationType:
    return GGMLQuantizationType.F32
