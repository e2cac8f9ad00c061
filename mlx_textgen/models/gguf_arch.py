"""Per-architecture knowledge: GGUF tensor names -> HF names, GGUF metadata -> config.json.

An `ArchSpec` says which mlx-lm model class loads the result and which of llama.cpp's
converter tweaks must be undone (Q/K row permutation, Gemma's "+1" norm weights).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlx_textgen.models.gguf_file import GGUFFile, GGUFImportError

GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
LLAMA_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
# Gemma 2/3 have four norms a block; llama.cpp calls the pre-MLP one ffn_norm.
GEMMA_BLOCK_NAMES = {
    **LLAMA_BLOCK_NAMES,
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# Tensors that carry no weights of their own in the MLX model (folded into config.json).
SKIPPED_TENSORS = frozenset({"rope_freqs.weight"})

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z0-9_]+)\.(weight|bias)$")
_GLOBAL_RE = re.compile(r"^([a-z0-9_]+)\.(weight|bias)$")


@dataclass(frozen=True)
class ArchSpec:
    """How one GGUF architecture maps onto an mlx-lm model type."""

    gguf_arch: str
    model_type: str
    architectures: tuple[str, ...]
    block_names: dict[str, str]
    # llama.cpp permutes Q/K rows for rotary layout on llama-family models only.
    unpermute_qk: bool
    # llama.cpp stores Gemma RMSNorm weights as (1 + w); mlx-lm's Gemma adds the 1 itself.
    norm_offset: float
    extra_config: Callable[[GGUFFile], dict[str, Any]]
    # Gemma 2 always ties its output projection to the embedding.
    always_tied: bool = False

    def hf_name(self, gguf_name: str) -> str | None:
        """The HF weight name for a GGUF tensor name; None for tensors to drop."""
        if gguf_name in SKIPPED_TENSORS or (self.always_tied and gguf_name == "output.weight"):
            return None
        if m := _BLOCK_RE.match(gguf_name):
            layer, part, suffix = m.groups()
            if part in self.block_names:
                return f"model.layers.{layer}.{self.block_names[part]}.{suffix}"
        elif (m := _GLOBAL_RE.match(gguf_name)) and m.group(1) in GLOBAL_NAMES:
            return f"{GLOBAL_NAMES[m.group(1)]}.{m.group(2)}"
        raise GGUFImportError(
            f"tensor {gguf_name!r} has no mapping for GGUF architecture {self.gguf_arch!r}"
        )

    def is_norm(self, hf_name: str) -> bool:
        return hf_name.endswith(("norm.weight", "layernorm.weight"))

    def qk_heads(self, gguf: GGUFFile, hf_name: str) -> int | None:
        """Head count whose rows llama.cpp permuted in this tensor, or None if it didn't."""
        if not self.unpermute_qk:
            return None
        if ".self_attn.q_proj." in hf_name:
            return _head_counts(gguf)[0]
        if ".self_attn.k_proj." in hf_name:
            return _head_counts(gguf)[1]
        return None


def unpermute_rows(x: Any, n_heads: int) -> Any:
    """Undo llama.cpp's HF->GGUF Q/K permutation along the first axis.

    llama.cpp interleaves the two rotary halves of each head (rows [a0 a1 .. b0 b1 ..] become
    [a0 b0 a1 b1 ..]); mlx-lm's RoPE (traditional=False) wants the halves back apart.
    Works on numpy and MLX arrays, 1-D (biases) or 2-D.
    """
    rows = x.shape[0]
    if rows % (2 * n_heads):
        raise GGUFImportError(f"{rows} rows can't be split into {n_heads} rotary heads")
    half = rows // n_heads // 2
    return x.reshape(n_heads, half, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def permute_rows(x: Any, n_heads: int) -> Any:
    """llama.cpp's HF->GGUF Q/K permutation (the inverse of `unpermute_rows`)."""
    half = x.shape[0] // n_heads // 2
    return x.reshape(n_heads, 2, half, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def spec_for(gguf: GGUFFile) -> ArchSpec:
    """The spec for this file's architecture, or GGUFImportError naming it."""
    arch = gguf.arch
    if arch not in SPECS:
        supported = ", ".join(sorted(SPECS))
        raise GGUFImportError(
            f"GGUF architecture {arch!r} is not supported (supported: {supported})"
        )
    return SPECS[arch]


def build_config(gguf: GGUFFile, spec: ArchSpec) -> dict[str, Any]:
    """An HF-style config.json (without quantization) that mlx-lm's model class accepts."""
    n_heads, n_kv_heads = _head_counts(gguf)
    hidden = int(gguf.require("{arch}.embedding_length"))
    embed = gguf.tensors.get("token_embd.weight")
    if embed is None:
        raise GGUFImportError("GGUF file has no token_embd.weight tensor")
    config: dict[str, Any] = {
        "model_type": spec.model_type,
        "architectures": list(spec.architectures),
        "hidden_size": hidden,
        "num_hidden_layers": int(gguf.require("{arch}.block_count")),
        "intermediate_size": _uniform(gguf, "{arch}.feed_forward_length"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": int(gguf.get("{arch}.attention.key_length") or hidden // n_heads),
        "rms_norm_eps": float(gguf.get("{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "vocab_size": int(embed.shape[0]),
        "max_position_embeddings": int(gguf.get("{arch}.context_length", 4096)),
        "rope_theta": float(gguf.get("{arch}.rope.freq_base", 10000.0)),
        "tie_word_embeddings": spec.always_tied or "output.weight" not in gguf.tensors,
    }
    rope_dims = gguf.get("{arch}.rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != config["head_dim"]:
        raise GGUFImportError(
            f"partial rotary embeddings ({rope_dims} of {config['head_dim']} dims) "
            f"are not supported for architecture {spec.gguf_arch!r}"
        )
    if (scaling := _rope_scaling(gguf)) is not None:
        config["rope_scaling"] = scaling
    config.update(spec.extra_config(gguf))
    return config


def _head_counts(gguf: GGUFFile) -> tuple[int, int]:
    n_heads = _uniform(gguf, "{arch}.attention.head_count")
    n_kv = gguf.get("{arch}.attention.head_count_kv")
    return n_heads, (_uniform(gguf, "{arch}.attention.head_count_kv") if n_kv else n_heads)


def _uniform(gguf: GGUFFile, key: str) -> int:
    # Some GGUFs store per-layer arrays; mlx-lm's dense models need one value.
    value = gguf.require(key)
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise GGUFImportError(
                f"per-layer values for {key.replace('{arch}', gguf.arch)} are not supported"
            )
        value = value[0]
    return int(value)


def _rope_scaling(gguf: GGUFFile) -> dict[str, Any] | None:
    kind = gguf.get("{arch}.rope.scaling.type")
    factor = gguf.get("{arch}.rope.scaling.factor")
    if "rope_freqs.weight" in gguf.tensors:
        return _llama3_scaling(gguf)
    if kind in (None, "none") or not factor or float(factor) == 1.0:
        return None
    if kind == "linear":
        return {"type": "linear", "rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        scaling: dict[str, Any] = {"type": "yarn", "rope_type": "yarn", "factor": float(factor)}
        if orig := gguf.get("{arch}.rope.scaling.original_context_length"):
            scaling["original_max_position_embeddings"] = int(orig)
        for key in ("beta_fast", "beta_slow"):
            if (value := gguf.get(f"{{arch}}.rope.scaling.yarn_{key}")) is not None:
                scaling[key] = float(value)
        return scaling
    raise GGUFImportError(f"rope scaling type {kind!r} is not supported")


def _llama3_scaling(gguf: GGUFFile) -> dict[str, Any]:
    """Recover Llama 3.x rope_scaling from the per-dimension `rope_freqs` divisors.

    llama.cpp bakes the scaling into that tensor; Llama 3.1/3.2 use low/high frequency
    factors 1 and 4 around an 8192-token original context, with `factor` the largest divisor.
    """
    from mlx_textgen.models.gguf_quant import decode_float

    divisors = np.array(decode_float(gguf.tensors["rope_freqs.weight"]), dtype=np.float64)
    base = float(gguf.get("{arch}.rope.freq_base", 10000.0))
    dims = 2 * divisors.shape[0]
    scaling = {
        "rope_type": "llama3",
        "type": "llama3",
        "factor": float(divisors.max()),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    if not np.allclose(_llama3_divisors(scaling, base, dims), divisors, rtol=1e-3):
        raise GGUFImportError("rope_freqs tensor does not match Llama 3 rope scaling")
    return scaling


def _llama3_divisors(scaling: dict[str, Any], base: float, dims: int) -> np.ndarray:
    freqs = base ** (np.arange(0, dims, 2) / dims)  # wavelength / 2π per dimension pair
    orig = scaling["original_max_position_embeddings"]
    low_wavelen = orig / scaling["low_freq_factor"]
    high_wavelen = orig / scaling["high_freq_factor"]
    wavelens = 2 * np.pi * freqs
    smooth = (orig / wavelens - scaling["low_freq_factor"]) / (
        scaling["high_freq_factor"] - scaling["low_freq_factor"]
    )
    factor = scaling["factor"]
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelens > low_wavelen, factor, np.where(wavelens < high_wavelen, 1.0, mid))


def _llama_extra(gguf: GGUFFile) -> dict[str, Any]:
    return {
        "attention_bias": "blk.0.attn_q.bias" in gguf.tensors,
        "mlp_bias": "blk.0.ffn_up.bias" in gguf.tensors,
    }


def _no_extra(gguf: GGUFFile) -> dict[str, Any]:
    return {}


def _gemma_query_scalar(gguf: GGUFFile, big_model_layers: int) -> int | float:
    """query_pre_attn_scalar, following llama.cpp: the 27B models scale by hidden/heads."""
    if scale := gguf.get("{arch}.attention.scale"):
        value = float(scale) ** -2
        # transformers validates this field as an int when loading config.json
        return round(value) if abs(value - round(value)) < 1e-3 else value
    n_heads = _head_counts(gguf)[0]
    if int(gguf.require("{arch}.block_count")) == big_model_layers:
        return int(gguf.require("{arch}.embedding_length")) // n_heads
    return int(gguf.get("{arch}.attention.key_length") or 256)


def _gemma2_extra(gguf: GGUFFile) -> dict[str, Any]:
    return {
        "query_pre_attn_scalar": _gemma_query_scalar(gguf, big_model_layers=46),
        "attn_logit_softcapping": float(gguf.get("{arch}.attn_logit_softcapping", 50.0)),
        "final_logit_softcapping": float(gguf.get("{arch}.final_logit_softcapping", 30.0)),
        "sliding_window": int(gguf.get("{arch}.attention.sliding_window", 4096)),
    }


def _gemma3_extra(gguf: GGUFFile) -> dict[str, Any]:
    return {
        "query_pre_attn_scalar": _gemma_query_scalar(gguf, big_model_layers=62),
        "sliding_window": int(gguf.get("{arch}.attention.sliding_window", 512)),
        "sliding_window_pattern": _sliding_pattern(gguf, default=6),
        "rope_local_base_freq": float(gguf.get("{arch}.rope.freq_base_swa", 10000.0)),
    }


def _sliding_pattern(gguf: GGUFFile, default: int) -> int:
    """Period of global-attention layers (every n-th layer is global)."""
    pattern = gguf.get("{arch}.attention.sliding_window_pattern")
    if pattern is None:
        return default  # llama.cpp hard-codes Gemma 3's 5 local : 1 global layout
    if isinstance(pattern, int):
        return pattern
    # Newer files list per layer whether it is sliding; mlx-lm needs it periodic.
    period = next((i + 1 for i, sliding in enumerate(pattern) if not sliding), len(pattern))
    expected = [(i + 1) % period != 0 for i in range(len(pattern))]
    if list(map(bool, pattern)) != expected:
        raise GGUFImportError("non-periodic sliding window layout is not supported")
    return period


SPECS: dict[str, ArchSpec] = {
    "llama": ArchSpec(
        "llama",
        "llama",
        ("LlamaForCausalLM",),
        LLAMA_BLOCK_NAMES,
        unpermute_qk=True,
        norm_offset=0.0,
        extra_config=_llama_extra,
    ),
    "qwen2": ArchSpec(
        "qwen2",
        "qwen2",
        ("Qwen2ForCausalLM",),
        LLAMA_BLOCK_NAMES,
        unpermute_qk=False,
        norm_offset=0.0,
        extra_config=_no_extra,
    ),
    "qwen3": ArchSpec(
        "qwen3",
        "qwen3",
        ("Qwen3ForCausalLM",),
        LLAMA_BLOCK_NAMES,
        unpermute_qk=False,
        norm_offset=0.0,
        extra_config=_no_extra,
    ),
    "gemma2": ArchSpec(
        "gemma2",
        "gemma2",
        ("Gemma2ForCausalLM",),
        GEMMA_BLOCK_NAMES,
        unpermute_qk=False,
        norm_offset=1.0,
        extra_config=_gemma2_extra,
        always_tied=True,
    ),
    "gemma3": ArchSpec(
        "gemma3",
        "gemma3_text",
        ("Gemma3ForCausalLM",),
        GEMMA_BLOCK_NAMES,
        unpermute_qk=False,
        norm_offset=1.0,
        extra_config=_gemma3_extra,
    ),
}
