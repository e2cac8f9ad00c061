"""Builders for tiny synthetic GGUF files, shared by the GGUF unit tests (no tests here).

`write_tiny_model` makes random HF-layout weights for an architecture, writes them into a
GGUF the way llama.cpp's converter does (Q/K row permutation for llama, +1 on Gemma norm
weights), and returns the HF weights and config so a test can build the reference
mlx-lm model directly and compare it with the imported one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from mlx_textgen.models.gguf_arch import permute_rows
from mlx_textgen.models.gguf_file import read_gguf

HIDDEN, FFN, HEADS, KV_HEADS = 256, 512, 4, 2
EOS_TEXT = "<|endoftext|>"
# Gemma's special tokens, for a vocabulary that renders its turn format as single tokens.
GEMMA_SPECIALS = ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>")
GEMMA_IDS_SPECIALS = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>")  # 0, 1, 2..
CONTROL, NORMAL = 3, 1  # GGUF token types
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"

ARCHS: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama", "head_dim": 64, "layers": 2, "tied": False},
    "qwen2": {"model_type": "qwen2", "head_dim": 64, "layers": 2, "tied": True, "qkv_bias": True},
    "qwen3": {"model_type": "qwen3", "head_dim": 32, "layers": 2, "tied": False, "qk_norm": True},
    "gemma2": {"model_type": "gemma2", "head_dim": 32, "layers": 2, "tied": True, "gemma": True},
    "gemma3": {
        "model_type": "gemma3_text",
        "head_dim": 32,
        "layers": 6,
        "tied": True,
        "gemma": True,
        "qk_norm": True,
    },
}


@dataclass
class TinyModel:
    """A synthetic GGUF and the HF-layout truth it was made from."""

    path: Path
    hf_weights: dict[str, np.ndarray]
    hf_config: dict[str, Any]
    vocab: list[str]


@dataclass
class Vocab:
    """A GPT-2 style BPE vocabulary as a GGUF stores it."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str = "default"


def byte_level_vocab(specials: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """A tiny GPT-2 style vocab: the 256 byte symbols, a few merges, control tokens
    (``EOS_TEXT``, then ``specials``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    tokens = [chr(c) for c in cs]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    tokens += ["Ġt", "he", "Ġthe", "in", "Ġa", EOS_TEXT, *specials]
    return tokens, merges


def tiny_vocab(specials: tuple[str, ...] = ()) -> Vocab:
    """`byte_level_vocab` with its token types: ``EOS_TEXT`` and ``specials`` are control."""
    tokens, merges = byte_level_vocab(specials)
    first_special = tokens.index(EOS_TEXT)
    types = [CONTROL if i >= first_special else NORMAL for i in range(len(tokens))]
    return Vocab(tokens, types, merges)


def vocab_of_gguf(path: str | Path, specials: tuple[str, ...]) -> Vocab:
    """A real model's BPE vocabulary (its normal tokens, merges and pre-tokenizer) with its
    control tokens replaced by ``specials``, which take the first ids."""
    meta = read_gguf(path)
    tokens, types = meta.require("tokenizer.ggml.tokens"), meta.require("tokenizer.ggml.token_type")
    normal = [t for t, kind in zip(tokens, types) if kind != CONTROL]
    return Vocab(
        [*specials, *normal],
        [CONTROL] * len(specials) + [NORMAL] * len(normal),
        list(meta.require("tokenizer.ggml.merges")),
        str(meta.get("tokenizer.ggml.pre") or "default"),
    )


def write_tiny_model(
    directory: Path,
    arch: str,
    *,
    qtypes: dict[str, Q] | None = None,
    seed: int = 0,
    sliding_window: int | None = None,
    rope_freqs: np.ndarray | None = None,
    chat_template: str | None = CHAT_TEMPLATE,
    specials: tuple[str, ...] = (),
    shape: dict[str, int] | None = None,
    name: str | None = None,
    vocab: Vocab | None = None,
) -> TinyModel:
    """Write `<directory>/<name or arch>.gguf`; `qtypes` maps GGUF tensor names to quant types.

    `rope_freqs` adds llama.cpp's per-dimension rope divisors (hf_config is not updated).
    `chat_template=None` leaves the template out; `specials` adds control tokens (with
    "<bos>"/"<eos>" among them, those are the file's BOS and EOS); `shape` overrides
    hf_config's sizes (hidden_size, num_hidden_layers, head_dim, ...). `vocab` replaces the
    byte-level vocabulary (and `specials`) with another one (`vocab_of_gguf`).
    """
    spec = ARCHS[arch]
    rng = np.random.default_rng(seed)
    vocab = vocab or tiny_vocab(specials)
    tokens = vocab.tokens
    config = {**hf_config(arch, len(tokens), sliding_window), **(shape or {})}
    spec = {**spec, "head_dim": config["head_dim"], "layers": config["num_hidden_layers"]}
    weights = random_hf_weights(spec, config, rng)
    path = directory / f"{name or arch}.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    _write_hparams(writer, arch, config)
    _write_vocab(writer, vocab, chat_template)
    for gguf_name, array in to_gguf_tensors(arch, weights, config).items():
        _add_tensor(writer, gguf_name, array, (qtypes or {}).get(gguf_name, Q.F32), rng)
    if rope_freqs is not None:  # llama.cpp's form of Llama 3 rope scaling
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return TinyModel(path, weights, config, tokens)


def hf_config(arch: str, vocab_size: int, sliding_window: int | None) -> dict[str, Any]:
    spec = ARCHS[arch]
    config = {
        "model_type": spec["model_type"],
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": spec["layers"],
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": spec["head_dim"],
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab_size,
        "max_position_embeddings": 512,
        "rope_theta": 10000.0,
        "tie_word_embeddings": spec["tied"],
    }
    if spec.get("gemma"):
        config["query_pre_attn_scalar"] = spec["head_dim"]
        config["sliding_window"] = sliding_window or 4096
    if arch == "gemma2":
        config.update(attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    if arch == "gemma3":
        config.update(sliding_window_pattern=6, rope_local_base_freq=10000.0, rope_theta=1e6)
    return config


def random_hf_weights(
    spec: dict[str, Any], config: dict[str, Any], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:  # Gemma stores w with scale (1 + w)
        base = 0.0 if spec.get("gemma") else 1.0
        return (base + 0.1 * rng.standard_normal(n)).astype(np.float32)

    hd, vocab = spec["head_dim"], config["vocab_size"]
    hidden, ffn = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    w = {"model.embed_tokens.weight": mat(vocab, hidden), "model.norm.weight": norm(hidden)}
    if not spec["tied"]:
        w["lm_head.weight"] = mat(vocab, hidden)
    norms = ["input_layernorm", "post_attention_layernorm"]
    if spec.get("gemma"):
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for i in range(spec["layers"]):
        p = f"model.layers.{i}."
        shapes = {
            "self_attn.q_proj": (heads * hd, hidden),
            "self_attn.k_proj": (kv_heads * hd, hidden),
            "self_attn.v_proj": (kv_heads * hd, hidden),
            "self_attn.o_proj": (hidden, heads * hd),
            "mlp.gate_proj": (ffn, hidden),
            "mlp.up_proj": (ffn, hidden),
            "mlp.down_proj": (hidden, ffn),
        }
        w.update({f"{p}{name}.weight": mat(*shape) for name, shape in shapes.items()})
        w.update({f"{p}{name}.weight": norm(hidden) for name in norms})
        if spec.get("qkv_bias"):
            for proj in ("q", "k", "v"):
                rows = shapes[f"self_attn.{proj}_proj"][0]
                w[f"{p}self_attn.{proj}_proj.bias"] = (0.1 * rng.standard_normal(rows)).astype(
                    np.float32
                )
        if spec.get("qk_norm"):
            w[f"{p}self_attn.q_norm.weight"] = norm(hd)
            w[f"{p}self_attn.k_norm.weight"] = norm(hd)
    return w


_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}


def to_gguf_tensors(
    arch: str, weights: dict[str, np.ndarray], config: dict[str, Any]
) -> dict[str, np.ndarray]:
    """HF weights -> GGUF names and layout, doing what llama.cpp's converter does."""
    gemma = ARCHS[arch].get("gemma", False)
    block = dict(_TO_GGUF)
    if gemma:
        block.update(
            post_attention_layernorm="post_attention_norm",
            pre_feedforward_layernorm="ffn_norm",
            post_feedforward_layernorm="post_ffw_norm",
        )
    else:
        block["post_attention_layernorm"] = "ffn_norm"
    top = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    out = {}
    for name, array in weights.items():
        module, suffix = name.rsplit(".", 1)
        if module.startswith("model.layers."):
            _, _, layer, part = module.split(".", 3)
            gguf_name = f"blk.{layer}.{block[part]}.{suffix}"
        else:
            gguf_name = f"{top[module]}.{suffix}"
        if arch == "llama" and part_is(module, "q_proj"):
            array = permute_rows(array, config["num_attention_heads"])
        elif arch == "llama" and part_is(module, "k_proj"):
            array = permute_rows(array, config["num_key_value_heads"])
        if gemma and module.endswith("norm"):
            array = array + 1.0
        out[gguf_name] = array
    return out


def part_is(module: str, part: str) -> bool:
    return module.endswith("." + part)


def _write_hparams(w: gguf.GGUFWriter, arch: str, c: dict[str, Any]) -> None:
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_key_length(c["head_dim"])
    w.add_value_length(c["head_dim"])
    w.add_rope_dimension_count(c["head_dim"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if "sliding_window" in c:
        w.add_sliding_window(c["sliding_window"])
    if arch == "gemma2":
        w.add_attn_logit_softcapping(c["attn_logit_softcapping"])
        w.add_final_logit_softcapping(c["final_logit_softcapping"])


def _write_vocab(w: gguf.GGUFWriter, vocab: Vocab, chat_template: str | None) -> None:
    tokens = vocab.tokens
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    bos = "<bos>" if "<bos>" in tokens else EOS_TEXT
    w.add_bos_token_id(tokens.index(bos))
    w.add_eos_token_id(tokens.index("<eos>" if "<eos>" in tokens else EOS_TEXT))
    if "<pad>" in tokens:
        w.add_pad_token_id(tokens.index("<pad>"))
    w.add_add_bos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)


def _add_tensor(
    w: gguf.GGUFWriter, name: str, array: np.ndarray, qtype: Q, rng: np.random.Generator
) -> None:
    if qtype == Q.F32:
        w.add_tensor(name, array.astype(np.float32))
    elif qtype == Q.F16:
        w.add_tensor(name, array.astype(np.float16))
    elif qtype == Q.Q6_K:
        w.add_tensor(name, random_q6_k(array.shape, rng), raw_dtype=Q.Q6_K)
    else:
        w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


def random_q6_k(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random but well-formed Q6_K blocks (the gguf package has no Q6_K quantizer).

    A block is ql[128], qh[64], int8 scales[16], then the f16 super-scale d.
    """
    rows, cols = shape
    blocks = rng.integers(0, 256, size=(rows, cols // 256, 210), dtype=np.uint8)
    blocks[..., 192:208] = (
        rng.integers(-8, 9, size=(rows, cols // 256, 16)).astype(np.int8).view(np.uint8)
    )
    blocks[..., 208:210] = np.full((rows, cols // 256, 1), 0.004, np.float16).view(np.uint8)
    return blocks.reshape(rows, -1)


def write_minimal_gguf(path: Path, arch: str, kv: dict[str, Any] | None = None) -> Path:
    """A GGUF with only an architecture name, a few keys and one tensor."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (kv or {}).items():
        writer.add_key_value(key, value, _value_type(value))
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _value_type(value: Any) -> gguf.GGUFValueType:
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.UINT32
    if isinstance(value, float):
        return gguf.GGUFValueType.FLOAT32
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING
    return gguf.GGUFValueType.ARRAY


def write_tiny_gemma3(
    directory: Path,
    *,
    window: int = 16,
    vocab: Vocab | None = None,
    qtypes: dict[str, Q] | None = None,
    **shape: int,
) -> Path:
    """A random Gemma 3 GGUF with Gemma's special tokens and NO chat template: the sliding
    window (``window`` tokens) is shorter than the test prompts, so its caches can't be cut.
    `vocab` (default: byte-level plus ``GEMMA_SPECIALS``) must hold those special tokens;
    `qtypes` as for `write_tiny_model` (default: all F32)."""
    size = {"hidden_size": 64, "intermediate_size": 128, "head_dim": 32, "num_attention_heads": 2,
            "num_key_value_heads": 1, "max_position_embeddings": 4096, **shape}  # fmt: skip
    return write_tiny_model(
        directory, "gemma3", seed=11, sliding_window=window, chat_template=None,
        specials=GEMMA_SPECIALS, shape=size, name="gemma3-no-template", vocab=vocab,
        qtypes=qtypes,
    ).path  # fmt: skip
