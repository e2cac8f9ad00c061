"""Capacity limits, disconnects and timeouts, on a server started with tight limits."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import ServerProcess, wait_until

LONG = {"model": MODEL, "prompt": "Count: 1, 2, 3,", "max_tokens": 400, "ignore_eos": True, "temperature": 0}


@pytest.fixture(scope="module")
def tight(smollm2_gguf, cache_root):
    srv = ServerProcess(
        ["--max-running-requests", "1", "--max-queued-requests", "0", "--request-timeout", "4"],
        cache_root,
    )
    yield srv
    srv.stop()


def first_event(lines) -> dict:
    for line in lines:
        if line.startswith("data: "):
            return json.loads(line[6:])
    raise AssertionError("stream ended without events")


def test_overload_503_then_disconnect_frees_capacity(tight):
    url = f"{tight.base_url}/v1/completions"
    with httpx.stream("POST", url, json=LONG | {"stream": True}, timeout=60) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()  # kept referenced: closing it would hang up on the server
        assert first_event(lines)["choices"][0]["index"] == 0
        busy = httpx.post(url, json=LONG | {"max_tokens": 2}, timeout=60)
        assert busy.status_code == 503 and busy.headers["Retry-After"]
        assert busy.json()["error"]["type"] == "server_overloaded"
    # The client went away: its sequence is freed within a step, and a new request gets in.
    assert wait_until(lambda: tight.health()["in_flight"] == 0, timeout=10)
    ok = httpx.post(url, json=LONG | {"max_tokens": 2}, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


def test_non_stream_disconnect_aborts(tight):
    url = f"{tight.base_url}/v1/completions"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=LONG, timeout=1.0)
    assert wait_until(lambda: tight.health()["in_flight"] == 0, timeout=10)
    # Quietly: an info line saying so, no CancelledError traceback.
    assert wait_until(lambda: "client disconnected" in tight.output(), timeout=10)
    assert "CancelledError" not in tight.output() and "Traceback" not in tight.output()


def test_timeout_mid_stream_is_an_error_event_then_done(tight):
    url = f"{tight.base_url}/v1/completions"
    with httpx.stream("POST", url, json=LONG | {"stream": True}, timeout=60) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    err = json.loads(lines[-2][6:])["error"]
    assert "timed out" in err["message"] and err["code"] == "timeout"


def test_timeout_non_stream_is_504(tight):
    r = httpx.post(f"{tight.base_url}/v1/completions", json=LONG, timeout=60)
    assert r.status_code == 504 and r.json()["error"]["param"] is None
    assert tight.health()["status"] == "ok"


def test_more_choices_than_capacity_is_400(tight):
    r = httpx.post(f"{tight.base_url}/v1/completions", json=LONG | {"n": 2, "max_tokens": 1}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
