"""System-prompt reuse on a sliding-window model, token for token, through the engine loop.

A tiny random Gemma 3 (window 16, shorter than the system prompt) saved as a GGUF without a
chat template: the server must pick Gemma's template, find the end of the system text
inside the first user turn, stop prefill there to store the exact state, and so let a new
question over the same system prompt resume from it with the tokens of a cold run.
"""

from __future__ import annotations

import queue

import pytest

from mlx_textgen.api.protocol import ChatCompletionRequest
from mlx_textgen.api.routes.chat import _render
from mlx_textgen.cache.manager import CacheOptions
from mlx_textgen.config import ModelConfig
from mlx_textgen.engine.loop import EngineLoop, LoopOptions
from mlx_textgen.engine.request import Request, SamplingParams
from mlx_textgen.models.loader import prepare
from tests.unit.test_gguf_builders import write_tiny_gemma3

SYSTEM = "You answer questions about parcels for a shipping desk. Keep it short. " * 3
QUESTIONS = ("Where is parcel 123?", "How long does customs take?", "Can I change the address?")


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    return write_tiny_gemma3(tmp_path_factory.mktemp("gemma3-gguf"), window=16)


@pytest.fixture(scope="module")
def info(gguf_path, tmp_path_factory):
    return prepare(ModelConfig(str(gguf_path), model_name="g"), cache_root=tmp_path_factory.mktemp("c"))


def render(info, messages):
    body = ChatCompletionRequest(messages=messages)
    return _render(info, body, body.conversations[0])


def ask(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_template_less_gguf_gets_gemma_format_and_stop(info):
    assert info.family_template == "gemma"
    ids, _ = render(info, ask("Hi?"))
    text = info.hf_tokenizer.decode(ids)
    assert text.startswith("<bos><start_of_turn>user\n" + SYSTEM.strip()[:20])
    assert text.endswith("Hi?<end_of_turn>\n<start_of_turn>model\n") and "<|im_" not in text
    end_of_turn = info.hf_tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in info.eos_token_ids


def test_system_boundary_is_the_same_for_every_question(info):
    system_tokens = len(info.hf_tokenizer.encode(SYSTEM.strip(), add_special_tokens=False))
    rendered = [render(info, ask(q)) for q in QUESTIONS]
    (first_ids, (b,)), *others = rendered
    assert b >= system_tokens  # <bos><start_of_turn>user\n + the system text + separator
    for ids, bounds in others:
        assert bounds == (b,) and ids[:b] == first_ids[:b]
    assert SYSTEM.strip() in info.hf_tokenizer.decode(first_ids[:b])
    # The next turn: the system boundary, then the end of the previous turn.
    turn = [*ask(QUESTIONS[0]), {"role": "assistant", "content": "On its way."},
            {"role": "user", "content": "When?"}]  # fmt: skip
    ids, bounds = render(info, turn)
    assert bounds[0] == b and "On its way.<end_of_turn>" in info.hf_tokenizer.decode(ids[: bounds[1]])


def make_loop(gguf_path, tmp_path, cached: bool) -> EngineLoop:
    outs: queue.SimpleQueue = queue.SimpleQueue()
    pc = CacheOptions(root=tmp_path / "pc", min_tokens=8) if cached else None
    opts = LoopOptions(cache_root=tmp_path, max_running_requests=4, prompt_cache=pc)
    loop = EngineLoop([ModelConfig(str(gguf_path), model_name="g")], opts, lambda b: [outs.put(o) for o in b])
    loop.outs = outs  # type: ignore[attr-defined]
    loop.start()
    loop.ready.wait()
    assert loop.startup_error is None
    return loop


def generate(loop: EngineLoop, rid: str, ids: list[int], bounds: tuple[int, ...]) -> tuple[list[int], int, str]:
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    loop.submit(Request(rid, ids, params, "g", boundaries=bounds))
    tokens: list[int] = []
    while True:
        out = loop.outs.get(timeout=120)  # type: ignore[attr-defined]
        tokens += out.token_ids
        if out.finished:
            return tokens, out.cached_tokens, out.cache_note


def test_new_question_hits_the_system_prompt_exactly(info, gguf_path, tmp_path):
    prompts = [render(info, ask(q)) for q in QUESTIONS]
    b = prompts[0][1][0]
    cold_loop = make_loop(gguf_path, tmp_path / "cold", cached=False)
    try:
        cold = [generate(cold_loop, f"c{i}", ids, bounds)[0] for i, (ids, bounds) in enumerate(prompts)]
    finally:
        cold_loop.stop()
    loop = make_loop(gguf_path, tmp_path / "warm", cached=True)
    try:
        first, cached0, _ = generate(loop, "w0", *prompts[0])
        results = [generate(loop, f"w{i}", *p) for i, p in enumerate(prompts[1:], 1)]
        turn = [*ask(QUESTIONS[0]), {"role": "assistant", "content": info.hf_tokenizer.decode(first)},
                {"role": "user", "content": "And when?"}]  # fmt: skip
        nxt_ids, nxt_bounds = render(info, turn)
        _, cached_next, _ = generate(loop, "w-next", nxt_ids, nxt_bounds)
    finally:
        loop.stop()
    assert cached0 == 0 and first == cold[0]
    for (tokens, cached, note), expect in zip(results, cold[1:]):
        assert cached == b, note  # exactly the system prompt: the questions differ right after
        assert tokens == expect
        assert note == f"divergence at token {b}"
    # The next turn resumes past the previous turn's first user message at least.
    assert cached_next > b + len(info.hf_tokenizer.encode(QUESTIONS[0], add_special_tokens=False))
