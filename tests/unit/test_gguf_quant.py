"""GGUF quant types: bit-exact repacking, dequantization, re-quantization choices."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants as gguf_quants

from mlx_textgen.models.gguf_file import GGUFImportError, GGUFTensor, read_gguf
from mlx_textgen.models.gguf_quant import (
    decode_float,
    decode_native,
    dequantize_other,
    is_supported,
    requant_bits,
    requantize,
    source_bits,
)
from mlx_textgen.models.gguf_weights import ConvertedWeights


def tensor_of(values: np.ndarray, qtype: Q) -> GGUFTensor:
    return GGUFTensor("t.weight", qtype, values.shape, gguf_quants.quantize(values, qtype))


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0])
def test_native_repack_equals_gguf_dequantization(qtype: Q) -> None:
    values = np.random.default_rng(1).standard_normal((6, 96)).astype(np.float32)
    t = tensor_of(values, qtype)
    packed = decode_native(t)
    assert packed.group_size == 32 and packed.bits == (8 if qtype == Q.Q8_0 else 4)
    ours = np.array(packed.astype(mx.float32).dequantize())
    reference = gguf_quants.dequantize(t.data, qtype)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-6)


def test_native_repack_is_bit_identical_to_mx_load_on_real_file(smollm2_gguf: str) -> None:
    path = Path(smollm2_gguf)
    gguf = read_gguf(path)
    reference = mx.load(str(path))
    seen = set()
    for name, t in gguf.tensors.items():
        if t.qtype not in (Q.Q4_1, Q.Q8_0):
            continue
        seen.add(t.type_name)
        packed, base = decode_native(t), name.removesuffix(".weight")
        assert mx.array_equal(packed.weight, reference[name]).item(), name
        assert mx.array_equal(packed.scales, reference[base + ".scales"]).item(), name
        assert mx.array_equal(packed.biases, reference[base + ".biases"]).item(), name
    assert seen == {"Q4_1", "Q8_0"}


def test_bf16_is_widened_exactly() -> None:
    values = np.random.default_rng(2).standard_normal((4, 32)).astype(np.float32)
    raw = gguf_quants.quantize(values, Q.BF16)
    decoded = decode_float(GGUFTensor("b", Q.BF16, values.shape, raw))
    assert decoded.dtype == mx.bfloat16
    np.testing.assert_array_equal(
        np.array(decoded.astype(mx.float32)), gguf_quants.dequantize(raw, Q.BF16)
    )


@pytest.mark.parametrize(
    "qtype, bits",
    [
        (Q.Q5_0, 5),
        (Q.Q5_1, 5),
        (Q.Q6_K, 6),
        (Q.Q5_K, 5),
        (Q.Q4_K, 4),
        (Q.Q3_K, 3),
        (Q.Q2_K, 2),
        (Q.IQ4_XS, 4),
        (Q.IQ2_XXS, 2),
        (Q.TQ1_0, 1),
    ],
)
def test_requant_bits_follow_source_bits(qtype: Q, bits: int) -> None:
    assert source_bits(qtype) == bits
    assert requant_bits(qtype) == (8 if bits >= 5 else 4)
    assert is_supported(qtype)


def test_types_without_a_dequantizer_are_unsupported() -> None:
    assert not is_supported(Q.Q8_1) and not is_supported(Q.I32)


@pytest.mark.parametrize("qtype", [Q.Q5_0, Q.Q5_1])
def test_dequantized_then_requantized_stays_close(qtype: Q) -> None:
    values = np.random.default_rng(3).standard_normal((8, 128)).astype(np.float32)
    t = tensor_of(values, qtype)
    dense = dequantize_other(t)
    np.testing.assert_array_equal(np.array(dense), gguf_quants.dequantize(t.data, qtype))
    packed = requantize(dense, requant_bits(qtype))
    assert (packed.bits, packed.group_size) == (8, 64)
    step = float(np.ptp(np.array(dense))) / 255
    assert float(mx.abs(packed.dequantize() - dense).max()) <= step


def test_undequantizable_tensor_names_type_and_tensor() -> None:
    t = GGUFTensor("blk.0.attn_q.weight", Q.Q8_1, (1, 32), np.zeros((1, 36), np.uint8))
    with pytest.raises(GGUFImportError, match=r"blk\.0\.attn_q\.weight.*Q8_1"):
        dequantize_other(t)


def test_quantization_config_has_overrides_for_the_minority() -> None:
    converted = ConvertedWeights(
        quantized={
            "model.embed_tokens": (32, 8),
            "model.layers.0.self_attn.q_proj": (32, 4),
            "model.layers.0.self_attn.k_proj": (32, 4),
            "model.layers.0.mlp.down_proj": (64, 8),
        }
    )
    config = converted.quantization_config()
    assert config == {
        "group_size": 32,
        "bits": 4,
        "mode": "affine",
        "model.embed_tokens": {"group_size": 32, "bits": 8},
        "model.layers.0.mlp.down_proj": {"group_size": 64, "bits": 8},
    }
    assert ConvertedWeights().quantization_config() is None


def test_unsupported_quant_type_is_refused_before_conversion() -> None:
    from mlx_textgen.models.gguf_arch import SPECS
    from mlx_textgen.models.gguf_file import GGUFFile
    from mlx_textgen.models.gguf_weights import check_tensors

    bad = GGUFTensor("blk.0.ffn_up.weight", Q.Q8_1, (4, 32), np.zeros((4, 36), np.uint8))
    gguf_file = GGUFFile(Path("m.gguf"), {"general.architecture": "llama"}, {bad.name: bad})
    with pytest.raises(GGUFImportError, match=r"blk\.0\.ffn_up\.weight.*Q8_1"):
        check_tensors(gguf_file, SPECS["llama"])
