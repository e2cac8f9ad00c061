"""Import the real SmolLM2-135M-Instruct Q4_1 GGUF and run it with mlx-lm."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import mlx_lm
import pytest
from mlx_lm.sample_utils import make_sampler

from mlx_textgen.models import gguf as gguf_import
from mlx_textgen.models.gguf import import_gguf

pytestmark = pytest.mark.slow
PROMPT = "The capital of France is"


@pytest.fixture(scope="session")
def float_dir(smollm2_gguf: str, cache_root: Path) -> Path:
    # smollm2_gguf and cache_root come from tests/conftest.py (session-scoped tmp dir).
    return import_gguf(smollm2_gguf, cache_root, float_weights=True, progress=False)


@pytest.fixture(scope="session")
def native_dir(smollm2_gguf: str, cache_root: Path) -> Path:
    return import_gguf(smollm2_gguf, cache_root, float_weights=False, progress=False)


def greedy(model_dir: Path, prompt: str, max_tokens: int = 4) -> str:
    model, tokenizer = mlx_lm.load(str(model_dir))
    return mlx_lm.generate(
        model,
        tokenizer,
        prompt,
        max_tokens=max_tokens,
        sampler=make_sampler(temp=0.0),
        verbose=False,
    )


def test_float_import_answers_paris(float_dir: Path) -> None:
    assert "Paris" in greedy(float_dir, PROMPT)


def test_native_q4_1_import_answers_paris(native_dir: Path) -> None:
    config = json.loads((native_dir / "config.json").read_text())
    # Q4_1 layers stay 4-bit; the Q8_0 embedding is the 8-bit override.
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    assert "Paris" in greedy(native_dir, PROMPT)


def test_second_import_is_a_cache_hit(
    float_dir: Path,
    smollm2_gguf: str,
    cache_root: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("cache hit expected")

    monkeypatch.setattr(gguf_import, "write_model_dir", no_conversion)
    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="mlx_textgen.gguf"):
        again = import_gguf(smollm2_gguf, cache_root, float_weights=True, progress=False)
    assert again == float_dir
    assert time.perf_counter() - started < 1.0  # memoized hash, no conversion
    assert any(r.getMessage().startswith("GGUF cache hit") for r in caplog.records)


def test_tokenizer_files_carry_chat_and_stop_settings(float_dir: Path) -> None:
    tokenizer_config = json.loads((float_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tokenizer_config["chat_template"]
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert tokenizer_config["add_bos_token"] is False
    generation = json.loads((float_dir / "generation_config.json").read_text())
    assert 2 in generation["eos_token_id"]


def test_chat_template_and_streaming_detokenizer(float_dir: Path) -> None:
    _, tokenizer = mlx_lm.load(str(float_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token_id == 2
    text = "naïve café 😀 日本 \t x  y\n"
    detok = tokenizer.detokenizer
    detok.reset()
    for token in tokenizer.encode(text, add_special_tokens=False):
        detok.add_token(token)
    detok.finalize()
    assert detok.text == text
