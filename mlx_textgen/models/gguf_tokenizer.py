"""Rebuild a Hugging Face `tokenizers` tokenizer from GGUF tokenizer metadata.

Two GGUF tokenizer models are supported:
- "gpt2": byte-level BPE (tokens + merges); the pre-tokenizer regex is chosen from
  tokenizer.ggml.pre, as llama.cpp does.
- "llama": SentencePiece BPE (tokens + scores) with byte fallback; merges are derived
  from the scores so that BPE picks the highest-scoring merged piece first.
A full HF tokenizer.json embedded in the file (tokenizer.huggingface.json) wins over both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from tokenizers import pre_tokenizers as pre

from mlx_textgen.models.gguf_file import GGUFFile, GGUFImportError

logger = logging.getLogger("mlx_textgen.gguf")

# llama.cpp token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPIECE_SPACE = "\u2581"

# Pre-tokenizer split patterns by tokenizer.ggml.pre. Llama 3's pattern keeps up to three
# digits together; Qwen2's splits every digit.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_PATTERNS = {
    "llama-bpe": _LLAMA3_PATTERN,
    "llama3": _LLAMA3_PATTERN,
    "llama-v3": _LLAMA3_PATTERN,
    "dbrx": _LLAMA3_PATTERN,
    "smaug-bpe": _LLAMA3_PATTERN,
    "qwen2": _QWEN2_PATTERN,
    "deepseek-r1-qwen": _QWEN2_PATTERN,
    "tekken": _TEKKEN_PATTERN,
}
# GPT-2's own pattern, after isolating each digit (StarCoder-style vocabularies).
_DIGIT_SPLIT_PRES = frozenset({"smollm", "starcoder", "refact", "codeshell"})
# Llama 3's tokenizer looks whole words up in the vocab before merging.
_IGNORE_MERGES_PRES = frozenset({"llama-bpe", "llama3", "llama-v3"})
# Control tokens that end a turn even when the file names a different EOS.
_EOG_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|eom_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
        "<|return|>",
        "<|call|>",
    }
)


@dataclass(frozen=True)
class TokenizerFiles:
    """Everything the model dir needs for `AutoTokenizer` and generation settings."""

    tokenizer_json: str
    tokenizer_config: dict[str, Any]
    special_tokens_map: dict[str, str]
    bos_token_id: int | None
    eos_token_ids: list[int]
    pad_token_id: int | None


def build_tokenizer_files(gguf: GGUFFile) -> TokenizerFiles:
    """Tokenizer files for `gguf`; GGUFImportError for tokenizer models it can't rebuild."""
    tokens: list[str] = list(gguf.require("tokenizer.ggml.tokens"))
    types: list[int] = list(gguf.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    ids = _special_ids(gguf)
    add_bos = bool(gguf.get("tokenizer.ggml.add_bos_token", _default_add_bos(gguf)))
    add_eos = bool(gguf.get("tokenizer.ggml.add_eos_token", False))
    if (embedded := gguf.get("tokenizer.huggingface.json")) is not None:
        tokenizer_json = embedded
    else:
        tok = build_tokenizer(gguf, tokens, types)
        tok.post_processor = _post_processor(tokens, ids, add_bos, add_eos, gguf)
        tokenizer_json = tok.to_str()
    names = {role: tokens[i] for role, i in ids.items() if i is not None and 0 <= i < len(tokens)}
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(gguf.get("{arch}.context_length", 4096)),
        **{f"{role}_token": name for role, name in names.items()},
    }
    if (template := _chat_template(gguf)) is not None:
        config["chat_template"] = template
    eos_ids = _eos_ids(gguf, tokens, types, ids.get("eos"))
    return TokenizerFiles(
        tokenizer_json=tokenizer_json,
        tokenizer_config=config,
        special_tokens_map={f"{role}_token": name for role, name in names.items()},
        bos_token_id=ids.get("bos"),
        eos_token_ids=eos_ids,
        pad_token_id=ids.get("pad"),
    )


def _default_add_bos(gguf: GGUFFile) -> bool:
    # llama.cpp's defaults when the file doesn't say: SentencePiece vocabs and Llama 3 add BOS.
    kind, pre_name = gguf.get("tokenizer.ggml.model"), gguf.get("tokenizer.ggml.pre")
    return kind == "llama" or pre_name in _IGNORE_MERGES_PRES


def build_tokenizer(gguf: GGUFFile, tokens: list[str], types: list[int]) -> Tokenizer:
    """The bare tokenizer (model, normalizer, pre-tokenizer, decoder, added tokens)."""
    kind = gguf.get("tokenizer.ggml.model")
    if kind == "gpt2":
        merges = [tuple(m.split(" ", 1)) for m in gguf.require("tokenizer.ggml.merges")]
        tok = _byte_level_bpe(tokens, merges, str(gguf.get("tokenizer.ggml.pre") or "default"))
    elif kind == "llama":
        scores = list(gguf.get("tokenizer.ggml.scores") or [0.0] * len(tokens))
        unk = gguf.get("tokenizer.ggml.unknown_token_id")
        add_prefix = bool(gguf.get("tokenizer.ggml.add_space_prefix", True))
        tok = _sentencepiece_bpe(tokens, scores, types, unk, add_prefix)
    else:
        raise GGUFImportError(f"GGUF tokenizer model {kind!r} is not supported (gpt2, llama)")
    _add_added_tokens(tok, tokens, types)
    return tok


def _byte_level_bpe(tokens: list[str], merges: list[tuple[str, str]], pre_name: str) -> Tokenizer:
    vocab = _vocab(tokens)
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=pre_name in _IGNORE_MERGES_PRES))
    if pre_name in _SPLIT_PATTERNS:
        tok.pre_tokenizer = pre.Sequence(
            [
                pre.Split(Regex(_SPLIT_PATTERNS[pre_name]), behavior="isolated", invert=False),
                pre.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif pre_name in _DIGIT_SPLIT_PRES:
        tok.pre_tokenizer = pre.Sequence(
            [
                pre.Digits(individual_digits=True),
                pre.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    else:
        if pre_name not in ("default", "gpt-2", "gpt2"):
            logger.warning("unknown tokenizer.ggml.pre %r; using the GPT-2 pre-tokenizer", pre_name)
        tok.pre_tokenizer = pre.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(
    tokens: list[str], scores: list[float], types: list[int], unk: int | None, add_prefix: bool
) -> Tokenizer:
    vocab = _vocab(tokens)
    merges = sentencepiece_merges(tokens, scores, types)
    unk_token = tokens[unk] if unk is not None and 0 <= unk < len(tokens) else None
    tok = Tokenizer(
        models.BPE(vocab, merges, unk_token=unk_token, byte_fallback=True, fuse_unk=True)
    )
    # llama.cpp puts the dummy "▁" in front of every text fragment, also after special tokens,
    # which is what a normalizer (run per fragment between added tokens) does.
    steps = [normalizers.Prepend(SPIECE_SPACE)] if add_prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPIECE_SPACE)])
    # The exact decoder shape mlx-lm recognises for its fast SentencePiece detokenizer.
    steps = [decoders.Replace(SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def sentencepiece_merges(
    tokens: list[str], scores: list[float], types: list[int]
) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's highest-score-first piece merging.

    Every normal piece that splits into two normal pieces yields a merge; merges rank by
    the merged piece's score (then its id), so BPE's lowest-rank-first order matches.
    """
    normal = {t: i for i, t in enumerate(tokens) if types[i] in (NORMAL, UNUSED) and t}
    ranked = []
    for piece, piece_id in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[piece_id], piece_id, normal[left], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # a repeated string keeps its first id
    if len(vocab) != len(tokens):
        logger.debug("GGUF vocab has %d repeated token strings", len(tokens) - len(vocab))
    return vocab


def _add_added_tokens(tok: Tokenizer, tokens: list[str], types: list[int]) -> None:
    # Control/unknown tokens are special; user-defined ones match verbatim but stay text.
    added = []
    for text, kind in zip(tokens, types):
        if kind in (CONTROL, UNKNOWN, USER_DEFINED) and text:
            special = kind != USER_DEFINED
            added.append(AddedToken(text, special=special, normalized=False))
    tok.add_tokens(added)


def _special_ids(gguf: GGUFFile) -> dict[str, int | None]:
    keys = {
        "bos": "bos_token_id",
        "eos": "eos_token_id",
        "unk": "unknown_token_id",
        "pad": "padding_token_id",
    }
    ids = {role: gguf.get(f"tokenizer.ggml.{key}") for role, key in keys.items()}
    return {role: int(i) for role, i in ids.items() if i is not None and int(i) >= 0}


def _post_processor(
    tokens: list[str], ids: dict[str, int], add_bos: bool, add_eos: bool, gguf: GGUFFile
) -> processors.PostProcessor | None:
    """Add BOS/EOS around encoded text like llama.cpp does with add_special=True."""
    bos = [(tokens[ids["bos"]], ids["bos"])] if add_bos and "bos" in ids else []
    eos = [(tokens[ids["eos"]], ids["eos"])] if add_eos and "eos" in ids else []
    if not bos and not eos:
        byte_level = gguf.get("tokenizer.ggml.model") == "gpt2"
        return processors.ByteLevel(trim_offsets=False) if byte_level else None

    def segment(seq: str, type_id: int) -> str:
        parts = [f"{bos[0][0]}:{type_id}"] if bos else []
        parts.append(f"{seq}:{type_id}")
        return " ".join(parts + ([f"{eos[0][0]}:{type_id}"] if eos else []))

    return processors.TemplateProcessing(
        single=segment("$A", 0),
        pair=f"{segment('$A', 0)} {segment('$B', 1)}",
        special_tokens=bos + [e for e in eos if e not in bos],
    )


def _chat_template(gguf: GGUFFile) -> str | list[dict[str, str]] | None:
    default = gguf.get("tokenizer.chat_template")
    names = gguf.get("tokenizer.chat_templates") or []
    named = [
        {"name": n, "template": t}
        for n in names
        if (t := gguf.get(f"tokenizer.chat_template.{n}")) is not None
    ]
    if not named:
        return default
    return ([{"name": "default", "template": default}] if default else []) + named


def _eos_ids(gguf: GGUFFile, tokens: list[str], types: list[int], eos: int | None) -> list[int]:
    """EOS plus end-of-turn ids, the set llama.cpp stops generation on."""
    found = [eos] if eos is not None else []
    for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        if (i := gguf.get(key)) is not None and int(i) >= 0:
            found.append(int(i))
    found += [i for i, t in enumerate(tokens) if types[i] == CONTROL and t in _EOG_TEXTS]
    return list(dict.fromkeys(found))
