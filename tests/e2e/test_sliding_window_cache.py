"""A sliding-window model through the real server: a tiny random Gemma 3 GGUF without a chat
template (window 16, far shorter than the system prompt). The server renders Gemma's turn
format, stops on its end-of-turn token, and a new question over a known system prompt (or
the next turn of a conversation) resumes from a stored checkpoint with the cold tokens."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.e2e.server import ServerProcess
from tests.unit.test_gguf_builders import GEMMA_SPECIALS, byte_level_vocab, write_tiny_gemma3

SYSTEM = ("You are the parcel desk of a shipping company. You answer questions about parcels, "
          "delivery times and customs forms. Keep every answer short. ") * 2
END_OF_TURN = byte_level_vocab(GEMMA_SPECIALS)[0].index("<end_of_turn>")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gemma3-e2e")
    path = write_tiny_gemma3(tmp, window=16)
    cfg = {"model_configs": [
        {"model_id_or_path": str(path), "model_name": "cached"},
        {"model_id_or_path": str(path), "model_name": "cold", "enable_cache": False},
    ]}  # fmt: skip
    (tmp / "models.yaml").write_text(yaml.safe_dump(cfg))
    srv = ServerProcess(["--config-file", str(tmp / "models.yaml")], tmp / "cache")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120)


def full_log(server: ServerProcess) -> str:
    return Path(server.log.name).read_text(errors="replace")


def chat(client, model: str, messages: list[dict], **kw):
    return client.chat.completions.create(model=model, messages=messages, temperature=0,
                                          max_tokens=kw.pop("max_tokens", 6), **kw)


def ask(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_template_less_gguf_renders_gemma_and_stops_on_end_of_turn(server, client):
    assert "carries no chat template: using the gemma preset (architecture gemma3_text)" in full_log(server)
    stopped = chat(client, "cold", ask("Hello?"), logit_bias={str(END_OF_TURN): 100})
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens == 1 and stopped.choices[0].message.content == ""
    assert "<|im_" not in (chat(client, "cold", ask("Hi?"), max_tokens=12).choices[0].message.content or "")


def test_new_questions_and_next_turn_hit_exactly(server, client):
    system_tokens = len(SYSTEM.strip())  # byte-level vocab: about a token a character
    first = chat(client, "cached", ask("Where is parcel 123?"))
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    for question in ("How long does customs take?", "Can I change the address?"):
        hit = chat(client, "cached", ask(question))
        cached = hit.usage.prompt_tokens_details.cached_tokens
        assert system_tokens * 0.9 <= cached < hit.usage.prompt_tokens
        cold = chat(client, "cold", ask(question))
        assert hit.choices[0].message.content == cold.choices[0].message.content
    turn = [*ask("Where is parcel 123?"), {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "And when?"}]  # fmt: skip
    nxt = chat(client, "cached", turn)
    # At least the whole previous prompt (its answer too, where it re-tokenizes the same).
    assert nxt.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1
    assert nxt.choices[0].message.content == chat(client, "cold", turn).choices[0].message.content
    log = full_log(server)
    assert "cached=0 (no entry)" in log
    assert "(divergence at token" in log


def test_warmup_of_the_system_prompt_serves_a_later_question(server, client):
    system = [{"role": "system", "content": SYSTEM + "Warm-up edition."}]
    w = httpx.post(f"{server.base_url}/v1/cache/warmup", json={"model": "cached", "messages": system},
                   timeout=120)  # fmt: skip
    assert w.status_code == 200
    hit = chat(client, "cached", [*system, {"role": "user", "content": "Is tracking free?"}])
    assert hit.usage.prompt_tokens_details.cached_tokens >= len(SYSTEM)
