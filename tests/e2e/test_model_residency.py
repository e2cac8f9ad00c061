"""Several models resident behind one endpoint (issue 15): SmolLM2 from its GGUF and a small
random model from an MLX dir, each in its own engine process, loaded on demand."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.e2e.random_model import random_model_dir
from tests.e2e.server import ServerProcess, wait_until

PROMPT = "The capital of France is"
# Long enough for the prompt cache (min_tokens 20), short enough to stay fast.
LONG = "Here is a list of European capitals and their countries, written out in full: " * 2


def start(tmp_path_factory, cache_root, models: list[dict], **server) -> ServerProcess:
    path = tmp_path_factory.mktemp("cfg") / "model_config.yaml"
    path.write_text(yaml.safe_dump({"model_configs": models, **server}))
    return ServerProcess(["--config-file", str(path)], cache_root)


@pytest.fixture(scope="module")
def random_dir(smollm2_gguf, cache_root, tmp_path_factory) -> Path:
    return random_model_dir(smollm2_gguf, cache_root, tmp_path_factory.mktemp("m") / "tiny-random")


@pytest.fixture(scope="module")
def stuck_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("m") / "stuck"
    d.mkdir()
    os.mkfifo(d / "config.json")
    return d


@pytest.fixture(scope="module")
def both(smollm2_gguf, random_dir, stuck_dir, cache_root, tmp_path_factory):
    models = [{"model_id_or_path": smollm2_gguf, "model_name": "smol", "aliases": ["smol-alias"]},
              {"model_id_or_path": str(random_dir), "model_name": "tiny"},
              {"model_id_or_path": "/nonexistent/missing.gguf", "model_name": "missing"},
              {"model_id_or_path": str(stuck_dir), "model_name": "stuck"}]
    srv = start(tmp_path_factory, cache_root, models, max_loaded_models=2)
    yield srv
    srv.stop()


def client(srv: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key="x", max_retries=0, timeout=120)


def complete(srv: ServerProcess, model: str, prompt: str = PROMPT, max_tokens: int = 3, **kw):
    return client(srv).completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                          temperature=0, **kw)


def admin(srv: ServerProcess, model: str, op: str) -> httpx.Response:
    return httpx.post(f"{srv.base_url}/v1/models/{model}/{op}", timeout=120)


def state(srv: ServerProcess, model: str) -> dict:
    return srv.health()["models"][model]


def test_lists_every_configured_model_loaded_or_not(both):
    cards = {m.id: m for m in client(both).models.list().data}
    assert list(cards) == ["smol", "tiny", "missing", "stuck"]
    assert cards["smol"].loaded and not cards["tiny"].loaded  # the first loads at start
    assert cards["smol"].aliases == ["smol-alias"]


def test_a_request_during_another_models_load_is_not_blocked(both, stuck_dir):
    # "stuck"'s config.json is a FIFO: its engine process blocks resolving it until we write.
    loader = threading.Thread(target=lambda: admin(both, "stuck", "load"))
    loader.start()
    try:
        assert wait_until(lambda: state(both, "stuck")["state"] == "preparing", timeout=30)
        r = complete(both, "smol")
        assert "Paris" in r.choices[0].text
        assert state(both, "stuck")["state"] == "preparing"  # still loading
    finally:
        _unblock(stuck_dir / "config.json")
        loader.join(120)
    assert wait_until(lambda: state(both, "stuck")["state"] == "unloaded", timeout=30)
    assert state(both, "stuck")["last_error"] and state(both, "smol")["loads"] == 1


def _unblock(fifo: Path) -> None:
    """Answer the blocked reader with an empty config and leave a plain file behind (so a
    later read doesn't block): that model's load then fails, as it should."""
    plain = fifo.with_name("plain.json")
    plain.write_text("{}")
    with open(fifo, "w") as f:  # the reader is waiting in open(): this lets it go
        os.replace(plain, fifo)
        f.write("{}")


def test_alternating_requests_do_not_reload(both):
    complete(both, "tiny")  # loads it
    before = both.health()["models"]
    for model in ("smol", "tiny", "smol", "tiny"):
        assert complete(both, model).model == model
    after = both.health()["models"]
    for model in ("smol", "tiny"):
        assert after[model]["loads"] == before[model]["loads"]
        assert after[model]["engine_pid"] == before[model]["engine_pid"] is not None
    assert after["smol"]["engine_pid"] != after["tiny"]["engine_pid"]


async def test_concurrent_streams_to_both(both):
    aio = openai.AsyncOpenAI(base_url=f"{both.base_url}/v1", api_key="x", max_retries=0, timeout=120)

    async def stream(model: str) -> tuple[str, str]:
        parts = []
        async for chunk in await aio.completions.create(
            model=model, prompt=PROMPT, max_tokens=6, temperature=0, stream=True,
            extra_body={"ignore_eos": True},
        ):
            parts.extend(c.text for c in chunk.choices)
        return model, "".join(parts)

    got = await asyncio.gather(*(stream(m) for m in ("smol", "tiny", "smol", "tiny")))
    for model, text in got:
        whole = complete(both, model, max_tokens=6, extra_body={"ignore_eos": True})
        assert text == whole.choices[0].text
    assert got[0][1] != got[1][1]  # two different models answered


def test_a_model_that_cannot_load_fails_its_requests_only(both):
    with pytest.raises(openai.InternalServerError) as exc:
        complete(both, "missing")
    assert exc.value.body["code"] == "model_load_failed"
    assert "`missing`" in exc.value.body["message"] and "not found" in exc.value.body["message"]
    assert state(both, "missing")["state"] == "unloaded" and state(both, "missing")["last_error"]
    assert "Paris" in complete(both, "smol").choices[0].text


def test_alias_names_the_same_model(both):
    r = complete(both, "smol-alias")
    assert r.model == "smol" and "Paris" in r.choices[0].text
    assert client(both).models.retrieve("smol-alias").id == "smol"


def test_unknown_model_is_404_and_others_keep_serving(both):
    with pytest.raises(openai.NotFoundError) as exc:
        complete(both, "nope")
    assert exc.value.body["code"] == "model_not_found"
    assert admin(both, "nope", "unload").status_code == 404
    assert "Paris" in complete(both, "smol").choices[0].text


def test_unload_returns_the_process_and_reload_hits_the_cache(both):
    first = complete(both, "smol", LONG)
    pid = state(both, "smol")["engine_pid"]
    r = admin(both, "smol", "unload")
    assert r.status_code == 200 and r.json()["loaded"] is False
    assert state(both, "smol")["state"] == "unloaded"
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
    again = complete(both, "smol", LONG)  # loads it again, on demand
    assert state(both, "smol")["loads"] == 2 and state(both, "smol")["engine_pid"] != pid
    assert state(both, "tiny")["loads"] == 1  # a failed load unloaded nobody
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # from the disk tier
    assert again.choices[0].text == first.choices[0].text


# -- tight limits: one model at a time --------------------------------------------------------


@pytest.fixture(scope="module")
def pinned(smollm2_gguf, random_dir, cache_root, tmp_path_factory):
    models = [{"model_id_or_path": smollm2_gguf, "model_name": "smol", "pin": True},
              {"model_id_or_path": str(random_dir), "model_name": "tiny"}]
    srv = start(tmp_path_factory, cache_root, models, max_loaded_models=1)
    yield srv
    srv.stop()


def test_nothing_evictable_is_503_with_retry_after(pinned):
    r = httpx.post(f"{pinned.base_url}/v1/completions", timeout=60,
                   json={"model": "tiny", "prompt": PROMPT, "max_tokens": 2})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    assert "pinned" in r.json()["error"]["message"]
    assert admin(pinned, "smol", "unload").status_code == 409  # pinned stays
    assert "Paris" in complete(pinned, "smol").choices[0].text


@pytest.fixture(scope="module")
def swapping(smollm2_gguf, random_dir, cache_root, tmp_path_factory):
    models = [{"model_id_or_path": smollm2_gguf, "model_name": "smol"},
              {"model_id_or_path": str(random_dir), "model_name": "tiny", "idle_ttl": 1}]
    srv = start(tmp_path_factory, cache_root, models, max_loaded_models=1, model_wait_timeout=1)
    yield srv
    srv.stop()


def test_busy_model_is_not_unloaded_the_waiter_gets_503(swapping):
    events: list[str] = []
    started = threading.Event()

    def long_stream() -> None:
        body = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 200, "stream": True,
                "temperature": 0, "ignore_eos": True}
        with httpx.stream("POST", f"{swapping.base_url}/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                    started.set()

    t = threading.Thread(target=long_stream)
    t.start()
    assert started.wait(60)
    r = httpx.post(f"{swapping.base_url}/v1/completions", timeout=60,
                   json={"model": "tiny", "prompt": PROMPT, "max_tokens": 2})
    t.join(120)
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert events[-1] == "data: [DONE]" and not any('"error"' in e for e in events)
    assert state(swapping, "smol")["loads"] == 1  # never unloaded under its stream


def test_swap_when_idle_then_idle_ttl_unloads(swapping):
    assert complete(swapping, "tiny").model == "tiny"  # smol is idle: it makes room
    assert state(swapping, "smol")["state"] == "unloaded"
    assert wait_until(lambda: state(swapping, "tiny")["state"] == "unloaded", timeout=20)
    assert "Paris" in complete(swapping, "smol").choices[0].text
