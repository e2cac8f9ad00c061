"""Tokenizers rebuilt from GGUF metadata: byte-level BPE (SmolLM2) and SentencePiece."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from tokenizers import Tokenizer

from mlx_textgen.models.gguf_file import GGUFFile, GGUFImportError, read_gguf
from mlx_textgen.models.gguf_tokenizer import (
    TokenizerFiles,
    build_tokenizer_files,
    sentencepiece_merges,
)

SmolTokenizer = tuple[TokenizerFiles, Tokenizer]
TrainedSpm = tuple[Any, GGUFFile]  # (sentencepiece processor, its GGUF)
ROUND_TRIP_TEXTS = [
    "The capital of France is",
    "  runs   of    spaces  and\ttabs\t\tand\n\n\nnewlines ",
    "def f(x):\n\treturn x ** 2  # square\n",
    "numbers 0 7 42 3.14159 1,000,000 -12e5",
    "emoji 😀🎉 👨‍👩‍👧 and flags 🇫🇷",
    "日本語のテキスト。中文文本！한국어 텍스트",
    "Ünïcödé ÀÉÎ ß café naïve Ωμέγα Привет",
    "it's they're we'll I'd",
    "a\r\nb\rc",
    " leading space",
    "trailing space ",
    "",
]

PRE_TOKENIZER_TEXTS = ROUND_TRIP_TEXTS + [
    "digits 7 42 123456789 3.14",
    "it's IT'S they'RE",
    "HelloWorld camelCase XMLHttpRequest",
    "path/to/file.txt\n/usr/bin",
    "!!!???...,,,\n\n  \t",
]


@pytest.fixture(scope="module")
def smollm2_file(smollm2_gguf: str) -> GGUFFile:
    return read_gguf(smollm2_gguf)


@pytest.fixture(scope="module")
def smollm2(smollm2_file: GGUFFile) -> SmolTokenizer:
    files = build_tokenizer_files(smollm2_file)
    return files, Tokenizer.from_str(files.tokenizer_json)


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_smollm2_round_trips(smollm2: SmolTokenizer, text: str) -> None:
    _, tok = smollm2
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        # GPT-2 byte symbols follow the 17 special tokens: "!" is 17, so "1" is 17 + 16.
        ("12345", [33, 34, 35, 36, 37]),  # smollm pre-tokenizer splits every digit
        ("The capital of France is", [504, 3575, 282, 4649, 314]),
        ("Hello world!", [19556, 905, 17]),
        ("<|im_start|>user\nHi<|im_end|>\n", [1, 4093, 198, 26843, 2, 198]),
    ],
)
def test_smollm2_expected_ids(smollm2: SmolTokenizer, text: str, expected: list[int]) -> None:
    # Ids as llama.cpp tokenizes the same GGUF (see the oracle test below).
    _, tok = smollm2
    assert tok.encode(text, add_special_tokens=False).ids == expected


def test_smollm2_matches_llama_cpp(smollm2: SmolTokenizer, smollm2_gguf: str) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    _, tok = smollm2
    llm = llama_cpp.Llama(smollm2_gguf, vocab_only=True, verbose=False)
    for text in ROUND_TRIP_TEXTS + ["<|endoftext|>abc<|im_end|>", "x" * 40 + " " + "ab" * 15]:
        expected = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert tok.encode(text, add_special_tokens=False).ids == expected, text


def test_smollm2_special_tokens_and_config(smollm2: SmolTokenizer) -> None:
    files, tok = smollm2
    assert tok.token_to_id("<|im_start|>") == 1
    assert tok.decode([1, 4093, 2], skip_special_tokens=True) == "user"
    config = files.tokenizer_config
    assert config["eos_token"] == "<|im_end|>" and config["bos_token"] == "<|im_start|>"
    assert config["add_bos_token"] is False
    assert "<|im_start|>assistant" in config["chat_template"]
    assert files.eos_token_ids[0] == 2 and files.bos_token_id == 1
    # No BOS is added for SmolLM2, as its GGUF says.
    assert tok.encode("Hi").ids == tok.encode("Hi", add_special_tokens=False).ids


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "tekken", "gpt-2", "starcoder"])
def test_pre_tokenizers_match_llama_cpp(pre: str, smollm2_file: GGUFFile, tmp_path: Path) -> None:
    # SmolLM2's real BPE vocab under each pre-tokenizer name: llama.cpp picks its split
    # regex by that name, and so must we.
    llama_cpp = pytest.importorskip("llama_cpp")
    meta = {**smollm2_file.metadata, "tokenizer.ggml.pre": pre}
    tok = Tokenizer.from_str(build_tokenizer_files(GGUFFile(Path("x"), meta)).tokenizer_json)
    path = tmp_path / f"{pre}.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(meta["tokenizer.ggml.tokens"])
    w.add_token_types(meta["tokenizer.ggml.token_type"])
    w.add_token_merges(meta["tokenizer.ggml.merges"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    for text in PRE_TOKENIZER_TEXTS:
        expected = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert tok.encode(text, add_special_tokens=False).ids == expected, text


def spm_gguf(
    directory: Path,
    tokens: list[str],
    scores: list[float],
    types: list[int],
    add_prefix: bool = True,
    extra: dict | None = None,
) -> GGUFFile:
    path = directory / "spm.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(tokens.index("<s>"))
    w.add_eos_token_id(tokens.index("</s>"))
    w.add_unk_token_id(tokens.index("<unk>"))
    w.add_add_space_prefix(add_prefix)
    for key, value in (extra or {}).items():
        w.add_string(key, value)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return read_gguf(path)


def test_sentencepiece_merges_prefer_the_higher_scoring_piece(tmp_path: Path) -> None:
    tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "c", "ab", "bc", "abc"]
    scores = [0, 0, 0, -10, -10, -10, -10, -5, -1, -2]
    types = [2, 3, 3, 1, 1, 1, 1, 1, 1, 1]
    assert sentencepiece_merges(tokens, scores, types)[0] == ("b", "c")
    files = build_tokenizer_files(spm_gguf(tmp_path, tokens, scores, types, add_prefix=False))
    tok = Tokenizer.from_str(files.tokenizer_json)
    # SentencePiece merges b+c (-1) before a+b (-5); then a+bc makes "abc".
    assert tok.encode("abc", add_special_tokens=False).tokens == ["abc"]
    assert tok.encode("abcab", add_special_tokens=False).tokens == ["abc", "ab"]
    assert tok.encode("abc").ids[0] == 1  # llama-style vocab adds BOS by default


def test_sentencepiece_dummy_prefix_and_byte_fallback(tmp_path: Path) -> None:
    pieces = ["▁", "a", "b", "c", "▁a", "ab", "▁ab", "▁c"]
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *pieces]
    scores = [0.0] * 259 + [-10.0, -10.0, -10.0, -10.0, -1.0, -2.0, -3.0, -4.0]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    tok = Tokenizer.from_str(
        build_tokenizer_files(spm_gguf(tmp_path, tokens, scores, types)).tokenizer_json
    )
    # "ab c" -> "▁ab▁c": ▁+a (-1) first, then ▁a+b (-3), then ▁+c (-4).
    assert tok.encode("ab c", add_special_tokens=False).tokens == ["▁ab", "▁c"]
    # "é" is not a piece: its UTF-8 bytes are.
    assert tok.encode("é", add_special_tokens=False).tokens == ["▁", "<0xC3>", "<0xA9>"]
    for text in ["ab cé", " ab", "c  a\n", "😀b"]:
        ids = tok.encode(text).ids
        assert ids[0] == 1  # BOS
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_unsupported_tokenizer_model_is_refused(tmp_path: Path) -> None:
    gguf_file = spm_gguf(tmp_path, ["<unk>", "<s>", "</s>"], [0, 0, 0], [2, 3, 3])
    gguf_file.metadata["tokenizer.ggml.model"] = "bert"
    with pytest.raises(GGUFImportError, match="'bert'"):
        build_tokenizer_files(gguf_file)


def test_embedded_hf_tokenizer_json_wins(tmp_path: Path) -> None:
    embedded = Tokenizer.from_str(
        build_tokenizer_files(
            spm_gguf(tmp_path, ["<unk>", "<s>", "</s>", "a"], [0, 0, 0, -1], [2, 3, 3, 1])
        ).tokenizer_json
    ).to_str()
    sub = tmp_path / "sub"
    sub.mkdir()
    gguf_file = spm_gguf(
        sub,
        ["<unk>", "<s>", "</s>", "a"],
        [0, 0, 0, -1],
        [2, 3, 3, 1],
        extra={"tokenizer.huggingface.json": embedded},
    )
    assert build_tokenizer_files(gguf_file).tokenizer_json == embedded


@pytest.fixture(scope="module")
def trained_spm(tmp_path_factory: pytest.TempPathFactory) -> TrainedSpm:
    """A real SentencePiece BPE model (byte fallback, dummy prefix) and its GGUF."""
    spm = pytest.importorskip("sentencepiece")
    lines = [
        "The quick brown fox jumps over the lazy dog.",
        "Hello world, hello there!",
        "def main():",
        "    return 42",
        "naïve café résumé 東京 12345 67890",
    ] * 40
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=420,
        byte_fallback=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        character_coverage=1.0,
        minloglevel=2,
        allow_whitespace_only_pieces=True,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.get_piece_size()

    def kind(i: int) -> int:
        return 2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1

    tokens = [sp.id_to_piece(i) for i in range(n)]
    gguf_file = spm_gguf(
        tmp_path_factory.mktemp("spm"),
        tokens,
        [sp.get_score(i) for i in range(n)],
        [kind(i) for i in range(n)],
    )
    return sp, gguf_file


SPM_TEXTS = [
    "The quick brown fox",
    " leading",
    "trailing ",
    "  two  spaces",
    "Hello\nworld\n\n",
    "tabs\there",
    "東京 café 😀 Ж",
    "12345 xyz qqq",
    "def main():\n    return 42",
]


def test_sentencepiece_matches_sentencepiece_and_round_trips(trained_spm: TrainedSpm) -> None:
    sp, gguf_file = trained_spm
    tok = Tokenizer.from_str(build_tokenizer_files(gguf_file).tokenizer_json)
    for text in SPM_TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert ids == sp.encode(text), text
        assert tok.decode(ids) == text
    assert tok.encode("Hello").ids[0] == sp.bos_id()


def test_sentencepiece_matches_llama_cpp(trained_spm: TrainedSpm) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    _, gguf_file = trained_spm
    tok = Tokenizer.from_str(build_tokenizer_files(gguf_file).tokenizer_json)
    llm = llama_cpp.Llama(str(gguf_file.path), vocab_only=True, verbose=False)
    for text in SPM_TEXTS + ["<s>Hello</s> there"]:
        expected = llm.tokenize(text.encode(), add_bos=False, special=True)
        assert tok.encode(text, add_special_tokens=False).ids == expected, text


def test_sentencepiece_decoder_is_mlx_lm_fast_path(trained_spm: TrainedSpm) -> None:
    from mlx_lm.tokenizer_utils import _is_spm_decoder

    _, gguf_file = trained_spm
    assert _is_spm_decoder(json.loads(build_tokenizer_files(gguf_file).tokenizer_json)["decoder"])
