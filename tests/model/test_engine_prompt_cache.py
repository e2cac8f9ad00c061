"""The prompt cache through the engine loop, token for token, on a sliding-window model:
a tiny randomly initialised Gemma-3-style model (window 8) served from a model dir."""

from __future__ import annotations

import json
import queue
import shutil

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from mlx_textgen.cache.manager import CacheOptions
from mlx_textgen.config import ModelConfig
from mlx_textgen.engine.loop import EngineLoop, LoopOptions
from mlx_textgen.engine.request import Request, SamplingParams


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory, smollm2_gguf, cache_root):
    """Random gemma3_text weights with SmolLM2's tokenizer files (vocab 49,152)."""
    from mlx_lm.models import gemma3_text

    from mlx_textgen.models.gguf import import_gguf

    cfg = dict(model_type="gemma3_text", hidden_size=64, num_hidden_layers=4, intermediate_size=128,
               num_attention_heads=2, head_dim=32, num_key_value_heads=1, vocab_size=49152,
               query_pre_attn_scalar=32, sliding_window=8, sliding_window_pattern=2,
               max_position_embeddings=4096)
    mx.random.seed(7)
    model = gemma3_text.Model(gemma3_text.ModelArgs.from_dict(cfg))
    out = tmp_path_factory.mktemp("gemma3-tiny")
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(cfg))
    smol = import_gguf(smollm2_gguf, cache_root, float_weights=True, progress=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (smol / name).exists():
            shutil.copy(smol / name, out / name)
    return out


def make_loop(model_dir, tmp_path, cached: bool) -> EngineLoop:
    outs: queue.SimpleQueue = queue.SimpleQueue()
    opts = LoopOptions(cache_root=tmp_path, max_running_requests=4,
                       prompt_cache=CacheOptions(root=tmp_path / "pc", min_tokens=4) if cached else None)
    loop = EngineLoop([ModelConfig(str(model_dir), model_name="g")], opts, lambda b: [outs.put(o) for o in b])
    loop.outs = outs
    loop.start()
    loop.ready.wait()
    assert loop.startup_error is None
    return loop


def generate(loop: EngineLoop, rid: str, prompt: list[int]) -> tuple[list[int], int]:
    loop.submit(Request(rid, prompt, SamplingParams(max_tokens=10, temperature=0, ignore_eos=True), "g"))
    tokens, cached = [], 0
    while True:
        out = loop.outs.get(timeout=120)
        tokens += out.token_ids
        cached = out.cached_tokens
        if out.finished:
            return tokens, cached


def test_sliding_window_hits_equal_cold(gemma_dir, tmp_path):
    prompt = list(range(1000, 1040))  # 40 tokens: well past the window of 8
    cold_loop = make_loop(gemma_dir, tmp_path / "cold", cached=False)
    try:
        cold, _ = generate(cold_loop, "c1", prompt)
        follow = prompt + cold + list(range(2000, 2006))
        cold_follow, _ = generate(cold_loop, "c2", follow)
    finally:
        cold_loop.stop()
    loop = make_loop(gemma_dir, tmp_path / "warm", cached=True)
    try:
        first, cached0 = generate(loop, "w1", prompt)
        again, cached1 = generate(loop, "w2", prompt)
        nxt, cached2 = generate(loop, "w3", follow)
    finally:
        loop.stop()
    assert cached0 == 0 and first == cold
    assert cached1 == len(prompt) - 1 and again == cold  # the checkpoint after the prompt
    assert cached2 >= len(prompt) + len(cold) - 1 and nxt == cold_follow  # after the completion


def test_unusable_cache_dir_keeps_a_ram_cache(tmp_path, caplog):
    from mlx_textgen.engine.caching import EngineCache

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cache = EngineCache(CacheOptions(root=blocker / "prompt_cache"))
    assert cache.manager is not None and "RAM only" in caplog.text
    cache.close()
