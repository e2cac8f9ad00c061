"""Pure pieces of issue 11: a template-less model's family preset, the chat boundaries the
prompt cache keeps (on a character "tokenizer"), and prefill stopping at checkpoints."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import pytest

from mlx_textgen.chat.boundaries import message_boundaries
from mlx_textgen.chat.templates import render_chat
from mlx_textgen.engine.prefill import Checkpoints, PrefillJob
from mlx_textgen.engine.request import Request, SamplingParams
from mlx_textgen.models.chat_family import family_preset


@pytest.mark.parametrize(
    ("model_type", "vocab", "preset"),
    [
        ("gemma3_text", set(), "gemma"),
        ("gemma2", set(), "gemma"),
        ("qwen2", set(), "chatml"),
        ("phi3", set(), "phi"),
        ("mistral", set(), "mistral"),
        ("llama", {"<|start_header_id|>", "<|eot_id|>"}, "llama3"),
        ("llama", {"<|im_start|>", "<|im_end|>"}, "chatml"),  # SmolLM2 without its template
        ("something_new", {"<start_of_turn>"}, "gemma"),
        (None, set(), "chatml"),
    ],
)
def test_family_preset(model_type: str | None, vocab: set[str], preset: str) -> None:
    got, why = family_preset(model_type, vocab)
    assert got == preset and why


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def boundaries_for(messages: list[dict[str, Any]], preset: str) -> tuple[list[int], tuple[int, ...]]:
    def encode(msgs: list[dict[str, Any]], final: bool) -> list[int]:
        return chars(render_chat(msgs, chat_template=None, preset=preset, bos_token="<bos>",
                                 add_generation_prompt=final))  # fmt: skip

    ids = encode(messages, True)
    return ids, message_boundaries(messages, ids, encode)


SYSTEM = {"role": "system", "content": "Be terse."}


@pytest.mark.parametrize("preset", ["gemma", "mistral", "chatml", "llama3", "phi"])
def test_system_boundary_is_question_independent(preset: str) -> None:
    a_ids, (a,) = boundaries_for([SYSTEM, {"role": "user", "content": "Where?"}], preset)
    b_ids, (b,) = boundaries_for([SYSTEM, {"role": "user", "content": "How?"}], preset)
    assert a == b and a_ids[:a] == b_ids[:b]
    text = "".join(map(chr, a_ids[:a]))
    assert "Be terse." in text and "Where" not in text


def test_gemma_boundary_ends_inside_the_first_user_turn() -> None:
    ids, (b,) = boundaries_for([SYSTEM, {"role": "user", "content": "Where?"}], "gemma")
    assert "".join(map(chr, ids[:b])) == "<bos><start_of_turn>user\nBe terse.\n\n"
    only, (w,) = boundaries_for([SYSTEM], "gemma")  # a warm-up of the system prompt alone
    assert w <= b and only[:w] == ids[:w]


def test_previous_turn_boundary() -> None:
    msgs = [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo."},
            {"role": "user", "content": "Where?"}]  # fmt: skip
    ids, (_, prev) = boundaries_for(msgs, "gemma")
    assert "".join(map(chr, ids[:prev])).endswith("Yo.<end_of_turn>\n")


class _Layer:
    state = mx.zeros((1,))


class _Model:
    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __call__(self, chunk: mx.array, cache: list[Any]) -> None:
        self.chunks.append(chunk[0].tolist())


def _prefill(prompt: list[int], start: int, stops: tuple[int, ...], budget: int):
    saved: list[int] = []
    req = Request("r", prompt, SamplingParams(max_tokens=1), "m")
    job = PrefillJob([req], [_Layer()], start, Checkpoints(stops, lambda t, c: saved.append(len(t))))
    model = _Model()
    while not job.done:
        job.step(model, budget)
    return model.chunks, saved


def test_prefill_stops_at_checkpoints_and_chunks_like_a_resume() -> None:
    prompt = list(range(30))
    cold, saved = _prefill(prompt, 0, (7, 20), budget=8)
    assert [len(c) for c in cold] == [7, 8, 5, 8, 1] and saved == [7, 20]
    resumed, again = _prefill(prompt, 7, (20,), budget=8)
    assert resumed == cold[1:] and again == [20]  # the same chunks after the checkpoint

