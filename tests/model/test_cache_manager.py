"""The prompt cache manager on real models: a hit gives the logits of a cold prefill, from RAM,
from disk after a restart, after corruption and under a tiny RAM budget; shared prefixes are
stored once; a sliding-window model restores exact checkpoints. Tiny random Llama and
Gemma 3 models (no downloads) cover the bookkeeping: splits, budgets, random traffic."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_textgen import backend
from mlx_textgen.cache.index import segment_key
from mlx_textgen.cache.manager import CacheOptions, PromptCacheManager
from mlx_textgen.cache.store import check_fingerprint

# Token counts: shared prefix, committed prompt, next prompt. Short, as the CPU runs the
# reference BLAS here (~0.1 s a token); prefills and cold logits are memoized for the same reason.
SYS, PROMPT, LONGER = 8, 14, 20


@pytest.fixture(scope="module")
def smol(smollm2_gguf, cache_root):
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.models.loader import load_weights, prepare

    info = prepare(ModelConfig(smollm2_gguf), cache_root=cache_root)
    model = load_weights(info)
    return model, PromptCacheManager.fingerprint(info.model_dir, "float32")


@pytest.fixture(scope="module")
def gemma():
    """A tiny random Gemma-3-style model: sliding-window layers (window 8) and global ones."""
    from mlx_lm.models import gemma3_text

    args = gemma3_text.ModelArgs(
        model_type="gemma3_text", hidden_size=64, num_hidden_layers=4, intermediate_size=128,
        num_attention_heads=2, head_dim=32, num_key_value_heads=1, vocab_size=256,
        query_pre_attn_scalar=32, sliding_window=8, sliding_window_pattern=2,
    )  # fmt: skip
    mx.random.seed(3)
    model = gemma3_text.Model(args)
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="module")
def llama():
    """A tiny random Llama (full attention): the bookkeeping tests, at no real model's cost."""
    from mlx_lm.models import llama as llama_mod

    args = llama_mod.ModelArgs(
        model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
        num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5, vocab_size=256,
    )  # fmt: skip
    mx.random.seed(4)
    model = llama_mod.Model(args)
    mx.eval(model.parameters())
    return model


LLAMA_FP = "llama-tiny-" + "b" * 24


def tokens(n: int, seed: int = 0, vocab: int = 5000) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, vocab) for _ in range(n)]


_MEMO: dict[tuple[int, str, tuple[int, ...]], object] = {}  # models are unhashable dicts


def memo(kind: str, model, toks: list[int], compute):
    key = (id(model), kind, tuple(toks))
    if key not in _MEMO:
        _MEMO[key] = compute()
    return _MEMO[key]


def _prefilled(model, toks: list[int]) -> list:
    cache = backend.make_prompt_cache(model)
    model(mx.array(toks)[None], cache=cache)
    mx.eval([c.state for c in cache])
    return cache


def prefill(model, toks: list[int]) -> list:
    """Fresh caches holding ``toks`` (copies of a memoized prefill: callers mutate theirs)."""
    cache = backend.make_prompt_cache(model)
    done_cache = memo("prefill", model, toks, lambda: _prefilled(model, toks))
    for c, done in zip(cache, done_cache):
        c.state = tuple(mx.array(x) if isinstance(x, mx.array) else x for x in done.state)
    return cache


def next_logits(model, cache: list, rest: list[int]) -> np.ndarray:
    out = model(mx.array(rest)[None], cache=cache)[0, -1]
    return np.array(out.astype(mx.float32))


def cold(model, toks: list[int]) -> np.ndarray:
    return memo(
        "cold", model, toks, lambda: next_logits(model, backend.make_prompt_cache(model), toks)
    )


def assert_hit_is_exact(model, mgr, fp, toks: list[int], expect: int, reason: str = "hit"):
    found = mgr.lookup(fp, model, toks)
    assert (found.cached_tokens, found.reason) == (expect, reason)
    got = next_logits(model, found.cache, toks[found.cached_tokens :])
    np.testing.assert_allclose(got, cold(model, toks), atol=1e-4, rtol=1e-4)
    mgr.release(found.pinned)
    return found


def manager(root: Path, **kw) -> PromptCacheManager:
    return PromptCacheManager(CacheOptions(root=root, **{"min_tokens": 4, **kw}))


def commit_prompt(mgr, model, fp, toks: list[int], boundaries: list[int]) -> int:
    return mgr.commit(fp, toks, prefill(model, toks), boundaries)


BASE = tokens(LONGER)


def test_hit_equals_cold_prefill(smol, tmp_path):
    model, fp = smol
    mgr = manager(tmp_path)
    cache = prefill(model, BASE[:PROMPT])
    assert mgr.commit(fp, BASE[:PROMPT], cache, [SYS, PROMPT]) > 0
    # The engine keeps decoding into its cache: the stored segments must not follow.
    for c in cache:
        c.trim(4)
    model(mx.array(tokens(4, seed=9))[None], cache=cache)
    mx.eval([c.state for c in cache])

    assert_hit_is_exact(model, mgr, fp, BASE, PROMPT)
    forked = BASE[:10] + tokens(6, seed=5)  # leaves the stored prompt inside its tail
    assert_hit_is_exact(model, mgr, fp, forked, 10, "divergence at token 10")
    found = mgr.lookup(fp, model, BASE[:PROMPT])
    assert found.cached_tokens == PROMPT - 1  # the last token is left for the first decode step
    assert found.cache[0].offset == PROMPT - 1
    mgr.release(found.pinned)
    assert mgr.lookup(fp, model, tokens(30, seed=7)).reason == "divergence at token 0"
    mgr.close()


def test_shared_prefix_is_stored_once(smol, tmp_path):
    model, fp = smol
    mgr = manager(tmp_path)
    system = tokens(SYS, seed=1)
    a, b = system + tokens(6, seed=2), system + tokens(4, seed=3)
    added_a = commit_prompt(mgr, model, fp, a, [SYS, len(a)])
    per_token = added_a // len(a)
    assert added_a == per_token * len(a)
    cache_b = prefill(model, b)
    assert mgr.commit(fp, b, cache_b, [SYS, len(b)]) == per_token * 4  # the tail only
    assert mgr.commit(fp, b, cache_b, [SYS, len(b)]) == 0  # nothing new
    mgr.flush()
    entries = {e["tokens"]: e for e in mgr.entries()}
    assert sorted(entries) == [SYS, len(b), len(a)]
    assert entries[len(a)]["bytes_ram"] == per_token * len(a)  # the chain it restores
    files = list((tmp_path / fp).rglob("*.safetensors"))
    assert len(files) == 3  # system prompt, tail a, tail b
    assert_hit_is_exact(model, mgr, fp, b + tokens(2, seed=4), len(b))
    mgr.close()


def test_restart_hits_from_disk(smol, tmp_path):
    model, fp = smol
    first = manager(tmp_path)
    commit_prompt(first, model, fp, BASE[:PROMPT], [SYS, PROMPT])
    first.close()

    again = manager(tmp_path)
    assert {e["tier"] for e in again.entries()} == {"disk"}
    assert_hit_is_exact(model, again, fp, BASE, PROMPT)
    assert {e["tier"] for e in again.entries()} == {"ram+disk"}
    other = fp.rpartition("-")[0] + "-" + "0" * 24  # same model name, other weights
    assert again.lookup(other, model, BASE).reason == "model changed"
    assert again.clear() >= 2 and again.entries() == []
    again.close()


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-4] ^= 0xFF  # in the tensor data: the header still scans fine, the checksum fails
    path.write_bytes(bytes(data))


def test_corrupt_segment_degrades_with_a_reason(smol, tmp_path):
    model, fp = smol
    first = manager(tmp_path)
    commit_prompt(first, model, fp, BASE[:PROMPT], [SYS, PROMPT])
    keys = {e["tokens"]: e["key"] for e in first.entries()}
    first.close()

    corrupt(first._store.path_for(fp, keys[PROMPT]))
    mgr = manager(tmp_path)
    assert_hit_is_exact(model, mgr, fp, BASE, SYS, f"unreadable segment at token {SYS}; hit")
    mgr.close()

    corrupt(mgr._store.path_for(fp, keys[SYS]))
    mgr = manager(tmp_path)
    found = mgr.lookup(fp, model, BASE)
    assert (found.cached_tokens, found.reason) == (0, "unreadable segment at token 0; no entry")
    assert found.cache[0].offset == 0
    assert list((tmp_path / "quarantine").iterdir())
    mgr.close()


def test_tiny_ram_budget_still_hits_from_disk(smol, tmp_path):
    model, fp = smol
    mgr = manager(tmp_path, ram_budget_bytes=1)
    commit_prompt(mgr, model, fp, BASE[:PROMPT], [SYS, PROMPT])
    mgr.flush()
    assert {e["tier"] for e in mgr.entries()} == {"disk"}
    assert_hit_is_exact(model, mgr, fp, BASE, PROMPT)
    assert {e["tier"] for e in mgr.entries()} == {"disk"}  # released, so evicted again
    mgr.close()


def test_no_disk_tier_and_disabled(smol, tmp_path):
    model, fp = smol
    ram_only = manager(tmp_path, disk_budget_bytes=0)
    commit_prompt(ram_only, model, fp, BASE[:PROMPT], [SYS, PROMPT])
    assert_hit_is_exact(model, ram_only, fp, BASE, PROMPT)
    assert not (tmp_path / fp).exists()
    ram_only.close()
    off = manager(tmp_path, disk_budget_bytes=0, ram_budget_bytes=0)
    assert commit_prompt(off, model, fp, BASE[:PROMPT], [SYS, PROMPT]) == 0
    assert off.lookup(fp, model, BASE).reason == "cache disabled"
    off.close()


def test_short_prompts_are_not_stored(smol, tmp_path):
    model, fp = smol
    mgr = manager(tmp_path, min_tokens=PROMPT + 1)
    assert commit_prompt(mgr, model, fp, BASE[:PROMPT], [SYS, PROMPT]) == 0
    assert mgr.entries() == []
    mgr.close()


def test_sliding_window_checkpoint_is_exact(gemma, tmp_path):
    fp = "gemma3-tiny-" + "a" * 24
    base = tokens(45, seed=61, vocab=256)
    mgr = manager(tmp_path)
    cache = prefill(gemma, base[:30])
    assert mgr.commit(fp, base[:30], cache, [20, 30]) > 0  # one checkpoint: where prefill stopped
    model_out = gemma(mx.array(base[30:34])[None], cache=cache)  # rotates the window in place
    mx.eval(model_out, [c.state for c in cache])
    assert [e["tokens"] for e in mgr.entries()] == [30]

    assert_hit_is_exact(gemma, mgr, fp, base, 30)
    forked = base[:25] + tokens(10, seed=62, vocab=256)
    found = mgr.lookup(fp, gemma, forked)
    assert found.cached_tokens == 0
    assert found.reason == (
        "no checkpoint within the 25 tokens shared with a cached prompt, the nearest is at "
        "token 30; RotatingKVCache caches resume only at a stored checkpoint"
    )
    mgr.close()

    again = manager(tmp_path)  # from disk after a restart
    assert_hit_is_exact(gemma, again, fp, base, 30)
    again.close()


def test_fingerprint(tmp_path):
    model_dir = tmp_path / "models--org--Some-Model" / "snapshots" / "abc123"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text('{"hidden_size": 8}')
    (model_dir / "tokenizer.json").write_text("{}")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(b"\0" * 16)
    fp = PromptCacheManager.fingerprint(model_dir)
    check_fingerprint(fp)
    assert fp.startswith("org--Some-Model-")
    assert PromptCacheManager.fingerprint(model_dir) == fp
    assert PromptCacheManager.fingerprint(model_dir, "float16") != fp
    assert PromptCacheManager.fingerprint(model_dir, name="x y").startswith("x-y-")
    (model_dir / "config.json").write_text('{"hidden_size": 9}')
    changed = PromptCacheManager.fingerprint(model_dir)
    assert changed != fp
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert PromptCacheManager.fingerprint(model_dir) != changed


def no_pins_left(mgr: PromptCacheManager) -> bool:
    indexes = mgr._indexes
    return all(n.lock_ref == 0 for fp in indexes.fingerprints() for n in indexes.get(fp).nodes())


def test_split_segments_hit_before_and_after_restart(llama, tmp_path):
    x = tokens(20, seed=71, vocab=256)
    y = x[:12] + tokens(8, seed=72, vocab=256)  # leaves x inside its only segment
    z = x[:16] + tokens(6, seed=73, vocab=256)  # leaves x's lower part, once only on disk
    mgr = manager(tmp_path)
    commit_prompt(mgr, llama, LLAMA_FP, x, [20])
    commit_prompt(mgr, llama, LLAMA_FP, y, [20])
    for prompt in (x, y):
        assert_hit_is_exact(llama, mgr, LLAMA_FP, prompt + [5], 20)
    mgr.close()
    assert no_pins_left(mgr)

    again = manager(tmp_path, ram_budget_bytes=1)  # every blob must come from disk
    assert sorted(e["tokens"] for e in again.entries()) == [20, 20]
    commit_prompt(again, llama, LLAMA_FP, z, [len(z)])  # splits x's lower part, read from disk
    again.flush()
    third = manager(tmp_path)
    for prompt in (x, y, z):
        assert_hit_is_exact(llama, third, LLAMA_FP, prompt + [5], len(prompt))
    # [0,12) -> {[12,16) -> {[16,20) of x, [16,22) of z}, [12,20) of y}
    assert len(list((tmp_path / LLAMA_FP).rglob("*.safetensors"))) == 5
    again.close()
    third.close()


def test_max_entries_and_replacement_free_both_tiers(llama, tmp_path):
    mgr = manager(tmp_path, max_entries=1)
    a, b = tokens(10, seed=81, vocab=256), tokens(12, seed=82, vocab=256)
    commit_prompt(mgr, llama, LLAMA_FP, a, [10])
    commit_prompt(mgr, llama, LLAMA_FP, b, [12])
    mgr.flush()
    assert [e["tokens"] for e in mgr.entries()] == [12]
    assert len(list((tmp_path / LLAMA_FP).rglob("*.safetensors"))) == 1
    assert list(mgr._ram) == [(LLAMA_FP, mgr.entries()[0]["key"])]
    assert mgr.lookup(LLAMA_FP, llama, a).reason == "divergence at token 0"  # a was evicted

    # A regenerated answer that differs only at its end replaces the old one.
    mgr = manager(tmp_path / "replace", replace_threshold=0.9)
    c = tokens(30, seed=83, vocab=256)
    commit_prompt(mgr, llama, LLAMA_FP, c, [30])
    commit_prompt(mgr, llama, LLAMA_FP, c[:29] + [7], [30])
    assert [e["tokens"] for e in mgr.entries()] == [30]
    assert_hit_is_exact(llama, mgr, LLAMA_FP, c[:29] + [7, 8], 30)
    mgr.close()


def test_disk_budget_evicts_least_recent_and_updates_the_index(llama, tmp_path):
    a, b = tokens(16, seed=91, vocab=256), tokens(16, seed=92, vocab=256)
    probe = manager(tmp_path / "probe")
    commit_prompt(probe, llama, LLAMA_FP, a, [16])
    probe.close()
    one_file = sum(f.stat().st_size for f in (tmp_path / "probe").rglob("*.safetensors"))

    mgr = manager(tmp_path / "cache", disk_budget_bytes=one_file + one_file // 2)
    commit_prompt(mgr, llama, LLAMA_FP, a, [16])
    mgr.flush()
    commit_prompt(mgr, llama, LLAMA_FP, b, [16])
    mgr.flush()
    tiers = {e["key"]: e["tier"] for e in mgr.entries()}
    key_a, key_b = segment_key(LLAMA_FP, a), segment_key(LLAMA_FP, b)
    assert tiers == {key_a: "ram", key_b: "ram+disk"}  # a lost its file, not its RAM copy
    assert no_pins_left(mgr)
    mgr.close()
    again = manager(tmp_path / "cache")
    assert len(again.entries()) == 1
    assert_hit_is_exact(llama, again, LLAMA_FP, b + [3], 16)
    again.close()


def test_checkpoints_need_the_position_among_boundaries(gemma, tmp_path):
    fp = "gemma3-tiny-" + "c" * 24
    base = tokens(20, seed=101, vocab=256)
    mgr = manager(tmp_path)
    assert mgr.commit(fp, base, prefill(gemma, base), [10]) == 0
    assert mgr.commit(fp, base + [1, 2], prefill(gemma, base), [20]) > 0  # tokens[:position]
    assert [e["tokens"] for e in mgr.entries()] == [20]
    mgr.close()


def test_another_cache_kind_under_one_fingerprint_starts_over(llama, gemma, tmp_path):
    base = tokens(20, seed=111, vocab=256)
    mgr = manager(tmp_path)
    commit_prompt(mgr, llama, LLAMA_FP, base, [20])
    found = mgr.lookup(LLAMA_FP, gemma, base + [1])
    assert (found.cached_tokens, found.reason) == (0, "no entry")
    assert mgr.commit(LLAMA_FP, base, prefill(gemma, base), [20]) > 0
    assert_hit_is_exact(gemma, mgr, LLAMA_FP, base + [1], 20)
    mgr.close()


def books_agree(mgr: PromptCacheManager, root: Path) -> None:
    """RAM blobs and disk files are exactly those the indexes list (after a flush)."""
    mgr.entries()  # loads every index from disk
    ram, disk = set(), set()
    for fp in mgr._indexes.fingerprints():
        for node in mgr._indexes.get(fp).nodes():
            assert node.lock_ref == 0
            if node.nbytes_ram:
                ram.add((fp, node.key))
            if node.on_disk:
                disk.add((fp, node.key))
    assert set(mgr._ram) == ram
    files = {(f.parent.parent.name, f.stem) for f in root.glob("*/*/*.safetensors")}
    assert files == disk


def test_random_traffic_keeps_hits_exact_and_books_straight(llama, tmp_path):
    rng = random.Random(5)
    blocks = [tokens(rng.randrange(3, 8), seed=200 + i, vocab=256) for i in range(6)]
    opts = {"ram_budget_bytes": 20_000, "disk_budget_bytes": 60_000, "max_entries": 6}
    mgr = manager(tmp_path, **opts)
    for step in range(40):
        picks = [rng.randrange(len(blocks)) for _ in range(rng.randrange(1, 5))]
        prompt = [t for i in picks for t in blocks[i]] + [rng.randrange(256)]
        found = mgr.lookup(LLAMA_FP, llama, prompt)
        got = next_logits(llama, found.cache, prompt[found.cached_tokens :])
        want = next_logits(llama, backend.make_prompt_cache(llama), prompt)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=found.reason)
        mgr.release(found.pinned)
        ends = list(itertools.accumulate(len(blocks[i]) for i in picks))
        mgr.commit(LLAMA_FP, prompt, prefill(llama, prompt), ends + [len(prompt)])
        if step % 10 == 9:
            mgr.close()
            books_agree(mgr, tmp_path)
            mgr = manager(tmp_path, **opts)
    mgr.flush()
    books_agree(mgr, tmp_path)
    mgr.close()


def test_missing_file_degrades_with_a_reason(llama, tmp_path):
    x = tokens(16, seed=121, vocab=256)
    first = manager(tmp_path)
    commit_prompt(first, llama, LLAMA_FP, x, [8, 16])
    first.close()
    mgr = manager(tmp_path)
    assert len(mgr.entries()) == 2  # the index now lists both files
    mgr._store.path_for(LLAMA_FP, segment_key(LLAMA_FP, x)).unlink()  # e.g. another process
    assert_hit_is_exact(llama, mgr, LLAMA_FP, x + [1], 8, "missing segment at token 8; hit")
    mgr.close()
