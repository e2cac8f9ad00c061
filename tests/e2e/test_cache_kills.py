"""SIGKILL in the middle of prompt-cache disk writes, again and again: the server restarts
and serves, and every hit gives the tokens of a cold prefill (no damaged entry is used)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import openai
import pytest
import yaml

from tests.e2e.server import ServerProcess
from tests.e2e.test_engine_process import engine_pid

SYSTEM = ("You answer questions about trains, timetables, platforms and tickets for a rail "
          "company. Be brief and exact. ") * 3
USERS = [
    "When is the first train to Leeds?",
    "When is the first train to York?",
    "When is the last train to York tonight?",
    "Which platform for Leeds?",
    "Can I bring a bicycle on the train?",
    "Can I bring a dog on the train?",
]
KILLS = 3

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")


@pytest.fixture(scope="module")
def config(smollm2_gguf, tmp_path_factory) -> Path:
    # Both resident at the end: hot and cold answers alternate, and a swap per request
    # (one engine process each) was most of this module's time.
    cfg = {"max_loaded_models": 2, "model_configs": [
        {"model_id_or_path": smollm2_gguf, "model_name": "cached"},
        {"model_id_or_path": smollm2_gguf, "model_name": "cold", "enable_cache": False},
    ]}
    path = tmp_path_factory.mktemp("cfg") / "model_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def ask(client: openai.OpenAI, model: str, user: str, history: int = 0):
    messages = [{"role": "system", "content": SYSTEM}]
    for earlier in USERS[:history]:  # multi-turn prompts extend (and split) stored ones
        messages += [{"role": "user", "content": earlier}, {"role": "assistant", "content": "Yes."}]
    messages.append({"role": "user", "content": user})
    return client.chat.completions.create(model=model, messages=messages, temperature=0,
                                          max_tokens=5)


def client_of(srv: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key="x", max_retries=0, timeout=120)


def kill_all(srv: ServerProcess) -> None:
    """SIGKILL the engine process (it holds the disk writer) and the server at once."""
    engine = engine_pid(srv.proc.pid)
    for pid in (engine, srv.proc.pid):
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    srv.proc.wait(timeout=30)
    srv.log.close()


def test_kills_mid_write_never_serve_a_damaged_entry(config, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    for round_ in range(KILLS):
        srv = ServerProcess(["--config-file", str(config)], cache_dir)
        try:
            client = client_of(srv)
            done = threading.Event()
            errors: list[BaseException] = []

            def traffic(r: int = round_) -> None:
                try:
                    for i, user in enumerate(USERS):
                        ask(client, "cached", user, history=(i + r) % 3)
                        if i == 1 + r:
                            done.set()  # some writes are queued or under way now
                except (openai.APIConnectionError, openai.APIStatusError):
                    pass  # the kill cut it off
                except BaseException as exc:  # pragma: no cover - shown below
                    errors.append(exc)
                finally:
                    done.set()

            t = threading.Thread(target=traffic)
            t.start()
            assert done.wait(120)
            kill_all(srv)
            t.join(60)
            assert not errors, errors
        finally:
            srv.stop()

    srv = ServerProcess(["--config-file", str(config)], cache_dir)
    try:
        client = client_of(srv)
        hits = 0
        asked = [(user, (i + r) % 3) for r in range(KILLS) for i, user in enumerate(USERS)]
        for user, history in sorted(set(asked))[::2]:  # what the killed runs stored, in part
            hot = ask(client, "cached", user, history)
            cold = ask(client, "cold", user, history)
            assert cold.usage.prompt_tokens_details.cached_tokens == 0
            assert hot.choices[0].message.content == cold.choices[0].message.content, (
                user, history)
            hits += hot.usage.prompt_tokens_details.cached_tokens > 0
        assert hits > 0
        assert srv.health()["status"] == "ok"
        assert "Traceback" not in srv.output()
    finally:
        srv.stop()
