"""Property-based fuzzing of request bodies against the real server: every answer is a 2xx
or a 4xx OpenAI error object (never a 5xx, never plain text), and /health stays ok.

Seeded (derandomize) and bounded so it runs in CI; bench/fuzz.py runs the same strategies
longer. Each failure found became an @example below."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import API_KEY
from tests.e2e.fuzz_bodies import BASES, MODEL, broken, encode, mutated

PATHS = list(BASES)
FUZZ = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def check(resp: httpx.Response) -> None:
    """2xx (a stream: well-formed, no server error inside) or a 4xx error object."""
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    if resp.status_code >= 400:
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        return
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        events = [ln[6:] for ln in resp.text.splitlines() if ln.startswith("data: ")]
        assert events and events[-1] == "[DONE]"
        for e in events[:-1]:
            assert json.loads(e).get("error", {}).get("type") != "server_error", e
    else:
        assert isinstance(resp.json(), dict)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=120,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        yield c
    assert server.health()["status"] == "ok"


def send(http: httpx.Client, path: str, raw: bytes, ctype: str = "application/json") -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    check(http.post(path, content=raw, headers=headers))


@FUZZ
@given(body=mutated("/v1/completions"))
@example(body={"model": MODEL, "prompt": "Hi", "max_tokens": 1, "seed": -1, "temperature": 1})
@example(body={"model": MODEL, "prompt": "a\ud800b", "max_tokens": 1})
@example(body={"model": MODEL, "prompt": "Hi", "max_tokens": 1, "stream_options": {}})
def test_fuzz_completions(http, body):
    send(http, "/v1/completions", encode(body))


@FUZZ
@given(body=mutated("/v1/chat/completions"))
@example(body={"model": "\udfff", "messages": [{"role": "user", "content": "x"}]})
@example(body={"model": MODEL, "max_tokens": 1,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "\ud83d"}]}]})
def test_fuzz_chat(http, body):
    send(http, "/v1/chat/completions", encode(body))


@FUZZ
@given(body=mutated("/v1/cache/warmup"))
@example(body={"model": MODEL, "messages": []})
@example(body={"model": MODEL, "prompt": [1, 99999999]})
@example(body={"model": MODEL, "prompt": ["2", 2.0]})
def test_fuzz_warmup(http, body):
    send(http, "/v1/cache/warmup", encode(body))


@pytest.mark.parametrize("path", PATHS)
@FUZZ
@given(data=st.data())
# Found: a 1,000-deep prompt list made Python's json raise RecursionError (a 500).
def test_fuzz_broken_bytes(http, path, data):
    raw, ctype = data.draw(broken(path))
    send(http, path, raw, ctype)


@pytest.mark.parametrize("path", PATHS)
def test_deep_nesting_and_empty(http, path):
    deep = b"[" * 100_000 + b"]" * 100_000
    thousand = b'{"model": "%s", "prompt": ' % MODEL.encode() + b"[" * 1000 + b"]" * 1000 + b"}"
    for raw in (thousand, deep, b'{"prompt": ' + deep + b"}", b"", b"null", b"\xff\xfe"):
        send(http, path, raw)
