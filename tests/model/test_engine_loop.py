"""The engine loop on the real model: a lone sequence decoded on plain caches hands over to
the batch mid-stream without changing a token, greedy or seeded."""

from __future__ import annotations

import json
import queue

import pytest

from mlx_textgen.config import ModelConfig
from mlx_textgen.engine.loop import EngineLoop, LoopOptions
from mlx_textgen.engine.request import Request, SamplingParams


def start_loop(gguf: str, cache_root, max_running: int = 8) -> EngineLoop:
    """A started engine loop on SmolLM2 whose outputs land in `loop.outs`."""
    outs: queue.SimpleQueue = queue.SimpleQueue()
    lp = EngineLoop(
        [ModelConfig(gguf, model_name="m")],
        LoopOptions(cache_root=cache_root, max_running_requests=max_running),
        lambda batch: [outs.put(o) for o in batch],
    )
    lp.start()
    lp.ready.wait()
    assert lp.startup_error is None
    lp.outs = outs
    return lp


@pytest.fixture(scope="module")
def loop(smollm2_gguf, cache_root):
    lp = start_loop(smollm2_gguf, cache_root)
    yield lp
    lp.stop()


def collect(lp, ids: set[str], on_first_token=None) -> dict[str, list[int]]:
    tokens: dict[str, list[int]] = {i: [] for i in ids}
    pending = set(ids)
    fired = False
    while pending:
        out = lp.outs.get(timeout=120)
        if out.request_id not in tokens:
            continue
        tokens[out.request_id] += out.token_ids
        if on_first_token and not fired and len(tokens[out.request_id]) >= 3:
            fired = True
            on_first_token()
        if out.finished:
            pending.discard(out.request_id)
    return tokens


@pytest.mark.parametrize("temperature,seed", [(0.0, None), (1.0, 5)])
def test_handover_mid_stream_keeps_tokens(loop, temperature, seed):
    tok = loop.models["m"].hf_tokenizer
    params = SamplingParams(max_tokens=16, temperature=temperature, seed=seed, ignore_eos=True,
                            presence_penalty=0.5)
    prompt = tok.encode("Write a poem about the sea.")
    loop.submit(Request("alone", prompt, params, "m"))
    alone = collect(loop, {"alone"})["alone"]

    other = Request("other", tok.encode("List three colours:"), params, "m")
    loop.submit(Request("solo-then-batch", prompt, params, "m"))
    got = collect(loop, {"solo-then-batch", "other"}, on_first_token=lambda: loop.submit(other))
    assert got["solo-then-batch"] == alone
    assert len(got["other"]) == 16
    assert loop.stats["decode_tokens"] > 0


def test_burst_is_prefilled_as_one_batch(smollm2_gguf, cache_root, tmp_path, monkeypatch):
    """Requests arriving together at an idle engine join the batch generator in one step:
    none is prefilled alone first, and each gets what it gets alone."""
    from mlx_textgen.engine import inbox
    from mlx_textgen.engine.trace import ENV

    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv(ENV, str(trace))
    monkeypatch.setattr(inbox, "BURST_QUIET_S", 0.5)  # the burst can't miss its window here
    monkeypatch.setattr(inbox, "BURST_MAX_S", 1.0)
    lp = start_loop(smollm2_gguf, cache_root)
    try:
        tok = lp.models["m"].hf_tokenizer
        params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
        prompts = {"a": tok.encode("The capital of France is"), "b": tok.encode("One, two, three,")}
        alone = {}
        for name, p in prompts.items():
            lp.submit(Request(f"alone-{name}", p, params, "m"))
            alone[name] = collect(lp, {f"alone-{name}"})[f"alone-{name}"]
        for name, p in prompts.items():
            lp.submit(Request(f"burst-{name}", p, params, "m"))
        got = collect(lp, {"burst-a", "burst-b"})
    finally:
        lp.stop()
    assert got == {"burst-a": alone["a"], "burst-b": alone["b"]}
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    taking = [r for r in rows if r.get("adds") == 2]
    assert len(taking) == 1, "both requests are taken in one iteration"
    assert taking[0]["joined"] == 2 and "prefill" not in taking[0]


def test_a_request_whose_setup_fails_ends_alone(loop):
    """An MLX error in one request's own set-up (a seed mx.random.key refuses, as the API
    now stops first) ends that request only; one running beside it finishes as usual."""
    tok = loop.models["m"].hf_tokenizer
    good = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    loop.submit(Request("bystander", tok.encode("Count: one, two,"), good, "m"))
    for rid, seed in (("bad-neg", -1), ("bad-big", 2**64)):
        bad = SamplingParams(max_tokens=12, temperature=1.0, seed=seed, ignore_eos=True)
        loop.submit(Request(rid, tok.encode("Tell me a story."), bad, "m"))
    finals = {}
    tokens = {"bystander": 0}
    while len(finals) < 3:
        out = loop.outs.get(timeout=120)
        tokens[out.request_id] = tokens.get(out.request_id, 0) + len(out.token_ids)
        if out.finished:
            finals[out.request_id] = out
    assert finals["bystander"].finish_reason.value == "length" and tokens["bystander"] == 12
    for rid in ("bad-neg", "bad-big"):
        assert finals[rid].finish_reason.value == "error" and finals[rid].error
    assert not loop._by_id and not loop._by_uid
