"""Every client mistake gets an OpenAI error object with the right status; the server stays up."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import API_KEY, MODEL

MSG = [{"role": "user", "content": "hi"}]


def post(server, path: str, body=None, *, raw: bytes | None = None, headers=None):
    h = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", **(headers or {})}
    return httpx.post(f"{server.base_url}{path}", json=body if raw is None else None,
                      content=raw, headers=h, timeout=60)


def assert_error(resp: httpx.Response, status: int, param: str | None = "any"):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param != "any":
        assert err["param"] == param
    return err


CHAT_CASES = [
    ({"model": MODEL}, "messages"),
    ({"model": MODEL, "messages": []}, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": MODEL, "messages": MSG, "temperature": "hot"}, "temperature"),
    ({"model": MODEL, "messages": MSG, "temperature": 7}, "temperature"),
    ({"model": MODEL, "messages": MSG, "top_p": 0}, "top_p"),
    ({"model": MODEL, "messages": MSG, "n": 0}, "n"),
    ({"model": MODEL, "messages": MSG, "max_tokens": -1}, "max_tokens"),
    ({"model": MODEL, "messages": MSG, "max_tokens": 10**7}, "max_tokens"),
    ({"model": MODEL, "messages": MSG, "logit_bias": {"abc": 1}}, "logit_bias"),
    ({"model": MODEL, "messages": MSG, "logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"model": MODEL, "messages": MSG, "logit_bias": {"5": 500}}, "logit_bias.5"),
    ({"model": MODEL, "messages": MSG, "frobnicate": True}, "frobnicate"),
    ({"model": MODEL, "messages": MSG, "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"model": MODEL, "messages": MSG, "modalities": ["text", "audio"]}, "modalities"),
    ({"model": MODEL, "messages": MSG, "top_logprobs": 2}, "top_logprobs"),
    ({"model": MODEL, "messages": MSG, "stream_options": {"bogus": 1}}, "stream_options.bogus"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type"),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
]


@pytest.mark.parametrize("body,param", CHAT_CASES)
def test_chat_bad_requests(server, body, param):
    assert_error(post(server, "/v1/chat/completions", body), 400, param)


COMPLETION_CASES = [
    ({"model": MODEL}, "prompt"),
    ({"model": MODEL, "prompt": ""}, "prompt"),
    ({"model": MODEL, "prompt": []}, "prompt"),
    ({"model": MODEL, "prompt": [1, "a"]}, "prompt"),
    ({"model": MODEL, "prompt": [10**9]}, "prompt"),
    ({"model": MODEL, "prompt": "x", "suffix": "y"}, "suffix"),
    ({"model": MODEL, "prompt": "x", "logprobs": 50}, "logprobs"),
    ({"model": MODEL, "prompt": "x", "best_of": 3}, "best_of"),
    ({"model": MODEL, "prompt": "x " * 9000}, "prompt"),
]


@pytest.mark.parametrize("body,param", COMPLETION_CASES)
def test_completion_bad_requests(server, body, param):
    assert_error(post(server, "/v1/completions", body), 400, param)


def test_context_overflow_has_code(server):
    err = assert_error(post(server, "/v1/completions", {"model": MODEL, "prompt": "hello", "max_tokens": 10**6}), 400)
    assert err["code"] == "context_length_exceeded"


def test_bad_json_and_non_object(server):
    assert_error(post(server, "/v1/chat/completions", raw=b"{not json"), 400)
    assert_error(post(server, "/v1/chat/completions", raw=b"[1, 2]"), 400)


def test_unknown_model_404(server, client):
    assert_error(post(server, "/v1/chat/completions", {"model": "nope", "messages": MSG}), 404, "model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_oversized_body_413(server):
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    assert_error(post(server, "/v1/chat/completions", big), 413)


def test_auth(server):
    url = f"{server.base_url}/v1/models"
    assert_error(httpx.get(url), 401)
    assert_error(httpx.get(url, headers={"Authorization": "Bearer wrong"}), 401)
    assert httpx.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert httpx.get(url, headers={"x-api-key": "second-key"}).status_code == 200
    assert httpx.get(f"{server.base_url}/health").status_code == 200  # open without a key
    bad = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=MSG)


def test_models_endpoints(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]
    m = client.models.retrieve(MODEL)
    assert m.id == MODEL and m.object == "model"


def test_unknown_route_is_openai_404(server):
    assert_error(httpx.get(f"{server.base_url}/v1/nothing", headers={"x-api-key": API_KEY}), 404)


def test_still_healthy_after_errors(server, client):
    assert server.health()["status"] == "ok"
    r = client.completions.create(model=MODEL, prompt="Hi", max_tokens=1)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_list_of_conversations_validates_each(server):
    body = {"model": MODEL, "messages": [MSG, []]}
    assert_error(post(server, "/v1/chat/completions", body), 400)
