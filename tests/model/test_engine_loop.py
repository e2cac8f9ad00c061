"""The engine loop on the real model: a lone sequence decoded on plain caches hands over to
the batch mid-stream without changing a token, greedy or seeded."""

from __future__ import annotations

import queue

import pytest

from mlx_textgen.config import ModelConfig
from mlx_textgen.engine.loop import EngineLoop, LoopOptions
from mlx_textgen.engine.request import Request, SamplingParams


@pytest.fixture(scope="module")
def loop(smollm2_gguf, cache_root):
    outs: queue.SimpleQueue = queue.SimpleQueue()
    lp = EngineLoop(
        [ModelConfig(smollm2_gguf, model_name="m")],
        LoopOptions(cache_root=cache_root, max_running_requests=8),
        lambda batch: [outs.put(o) for o in batch],
    )
    lp.start()
    lp.ready.wait()
    assert lp.startup_error is None
    lp.outs = outs
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
