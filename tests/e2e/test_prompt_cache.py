"""The prompt cache through the real server: a hit gives exactly the cold tokens, a new
conversation over the same system prompt reuses it, and a restarted server hits on disk."""

from __future__ import annotations

import openai
import pytest
import yaml

from tests.e2e.server import ServerProcess

SYSTEM = ("You are a meticulous assistant for a shipping company. You answer questions about "
          "parcels, delivery times, customs forms and tracking numbers. Keep answers short. ") * 3


def chat(client, model: str, user: str, **kw):
    return client.chat.completions.create(
        model=model, temperature=0, max_tokens=kw.pop("max_tokens", 6),
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], **kw)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("prompt-cache")


@pytest.fixture(scope="module")
def config(smollm2_gguf, tmp_path_factory):
    cfg = {"model_configs": [
        {"model_id_or_path": smollm2_gguf, "model_name": "cached"},
        {"model_id_or_path": smollm2_gguf, "model_name": "cold", "enable_cache": False},
    ]}
    path = tmp_path_factory.mktemp("cfg") / "model_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def client_of(srv: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key="x", max_retries=0, timeout=120)


def test_hits_equal_cold_and_survive_restart(config, cache_dir):
    srv = ServerProcess(["--config-file", str(config)], cache_dir)
    try:
        client = client_of(srv)
        first = chat(client, "cached", "Where is parcel 123?")
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        # A new conversation over the same system prompt reuses it.
        other = chat(client, "cached", "How long does customs take?")
        cached = other.usage.prompt_tokens_details.cached_tokens
        assert cached > 80 and cached < other.usage.prompt_tokens  # the ~100-token system prompt
        cold = chat(client, "cold", "How long does customs take?")
        assert cold.usage.prompt_tokens_details.cached_tokens == 0
        assert other.choices[0].message.content == cold.choices[0].message.content
        # Streamed hits report cached tokens too.
        chunks = list(chat(client, "cached", "Where is parcel 123?", stream=True,
                           stream_options={"include_usage": True}))
        assert chunks[-1].usage.prompt_tokens_details.cached_tokens >= cached
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
            first.choices[0].message.content
    finally:
        srv.stop()
    # A second server process on the same cache dir hits the disk tier on its first request.
    srv = ServerProcess(["--config-file", str(config)], cache_dir)
    try:
        again = chat(client_of(srv), "cached", "Is tracking free?")
        assert again.usage.prompt_tokens_details.cached_tokens > 80
        cold = chat(client_of(srv), "cold", "Is tracking free?")
        assert again.choices[0].message.content == cold.choices[0].message.content
    finally:
        srv.stop()
    # The CLI lists and clears the disk tier.
    listed = cli("cache", "list", "--cache-dir", str(cache_dir))
    assert listed.startswith("cached-") and "entries" in listed and "cold-" not in listed
    assert cli("cache", "clear", "--model", "cached", "--cache-dir", str(cache_dir)).startswith("removed ")
    assert "empty" in cli("cache", "list", "--cache-dir", str(cache_dir))


def cli(*args: str) -> str:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mlx_textgen", *args], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def test_admin_list_warmup_and_delete(config, cache_dir):
    import httpx

    srv = ServerProcess(["--config-file", str(config)], cache_dir)
    try:
        base = srv.base_url
        w = httpx.post(f"{base}/v1/cache/warmup", json={"model": "cached", "messages": [
            {"role": "system", "content": SYSTEM + " (warm-up)"}, {"role": "user", "content": "hi"}]}, timeout=120)
        assert w.status_code == 200 and w.json()["prompt_tokens"] > 80
        listing = httpx.get(f"{base}/v1/cache").json()
        models = {m["model"]: m for m in listing["data"]}
        assert "cached" in models and models["cached"]["entries"]
        entry = models["cached"]["entries"][0]
        assert {"tokens", "bytes_ram", "bytes_disk", "tier", "hits", "last_use"} <= set(entry)
        hit = client_of(srv).chat.completions.create(model="cached", max_tokens=1, messages=[
            {"role": "system", "content": SYSTEM + " (warm-up)"}, {"role": "user", "content": "hi"}])
        assert hit.usage.prompt_tokens == w.json()["prompt_tokens"]
        assert hit.usage.prompt_tokens_details.cached_tokens == hit.usage.prompt_tokens - 1
        assert httpx.delete(f"{base}/v1/cache", params={"model": "nope"}).status_code == 404
        gone = httpx.delete(f"{base}/v1/cache", params={"model": "cached"}).json()
        assert gone["deleted"] > 0
        assert not [m for m in httpx.get(f"{base}/v1/cache").json()["data"] if m["model"] == "cached"]
        bad = httpx.post(f"{base}/v1/cache/warmup", json={"model": "cached"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "prompt"
    finally:
        srv.stop()
