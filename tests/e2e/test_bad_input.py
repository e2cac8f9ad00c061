"""Input that once broke the server (issue 16): each is a 4xx OpenAI error object, rejected
before the engine, and a request running beside it is untouched."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.e2e.conftest import API_KEY, MODEL
from tests.e2e.test_errors import assert_error, post

MSG = [{"role": "user", "content": "hi"}]
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


@pytest.mark.parametrize("seed", [-1, 2**64, 10**30, -(2**63)])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_seed_outside_64_bits_is_400(server, path, seed):
    body = {"model": MODEL, "temperature": 1.0, "max_tokens": 2, "seed": seed}
    body |= {"prompt": "Hi"} if path == "/v1/completions" else {"messages": MSG}
    assert_error(post(server, path, body), 400, "seed")


def test_largest_seed_with_n_gt_1_is_served(server):
    # The choices' seeds are seed + j: past 2^64 they wrap instead of failing in the engine.
    body = {"model": MODEL, "prompt": "Hi", "temperature": 1.0, "max_tokens": 2,
            "seed": 2**64 - 1, "n": 3}
    r = post(server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 3


def test_bad_seed_never_reaches_a_bystanders_stream(server):
    events: list[str] = []

    def stream() -> None:
        body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 24, "stream": True,
                "temperature": 1.0, "seed": 3, "ignore_eos": True}
        with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body,
                          headers=HEADERS, timeout=120) as r:
            events.extend(line for line in r.iter_lines() if line.startswith("data: "))

    t = threading.Thread(target=stream)
    t.start()
    for seed in (-1, 2**64, 10**30):
        body = {"model": MODEL, "prompt": "x", "temperature": 1.0, "max_tokens": 2, "seed": seed}
        assert_error(post(server, "/v1/completions", body), 400, "seed")
    t.join(120)
    assert events and events[-1] == "data: [DONE]"
    assert not any('"error"' in e for e in events)


LONE = '"a\\ud800b"'  # JSON text: a lone high surrogate escape
SURROGATE_BODIES = [
    ("/v1/completions", '{"model": "%s", "prompt": %s, "max_tokens": 1}' % (MODEL, LONE), "prompt"),
    ("/v1/completions", '{"model": "%s", "prompt": ["ok", %s], "max_tokens": 1}' % (MODEL, LONE),
     "prompt[1]"),
    ("/v1/chat/completions",
     '{"model": "%s", "messages": [{"role": "user", "content": %s}]}' % (MODEL, LONE),
     "messages[0].content"),
    ("/v1/chat/completions",
     '{"model": "%s", "messages": [{"role": "user", "content": [{"type": "text", "text": %s}]}]}'
     % (MODEL, LONE), "messages[0].content[0].text"),
    ("/v1/chat/completions", '{"model": %s, "messages": [{"role": "user", "content": "x"}]}' % LONE,
     "model"),
    ("/v1/completions", '{"model": "%s", "prompt": "x", "stop": ["\\udc00"]}' % MODEL, "stop[0]"),
    ("/v1/completions", '{"model": "%s", "prompt": "x", "user": "\\udfff"}' % MODEL, "user"),
    ("/v1/cache/warmup", '{"model": "%s", "prompt": %s}' % (MODEL, LONE), "prompt"),
    ("/v1/cache/warmup", '{"messages": [{"role": "user", "content": %s}]}' % LONE,
     "messages[0].content"),
    ("/v1/cache/warmup", '{"model": %s, "prompt": "hello there"}' % LONE, "model"),
]


@pytest.mark.parametrize("path,raw,param", SURROGATE_BODIES)
def test_lone_surrogates_are_400_and_keep_the_connection(server, path, raw, param):
    with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=60) as http:
        r = http.post(path, content=raw.encode())
        assert_error(r, 400, param)
        # The same keep-alive connection serves the next request.
        ok = http.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 1})
        assert ok.status_code == 200, ok.text


def test_raw_surrogate_bytes_are_400(server):
    # ED A0 80 is a surrogate encoded as UTF-8 (invalid); Python's json would let it through.
    raw = b'{"model": "%s", "prompt": "a\xed\xa0\x80b", "max_tokens": 1}' % MODEL.encode()
    assert_error(post(server, "/v1/completions", raw=raw), 400, "prompt")


def test_escaped_backslash_is_not_a_surrogate(server):
    raw = '{"model": "%s", "prompt": "a\\\\ud800b", "max_tokens": 1}' % MODEL  # text: a\ud800b
    r = post(server, "/v1/completions", raw=raw.encode())
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "body,param",
    [
        ({"messages": []}, "messages"),
        ({"prompt": [1, 99999999]}, "prompt"),
        ({"prompt": [-1, 2, 3]}, "prompt"),
        ({"prompt": ["2", 3]}, "prompt"),
        ({"prompt": [2.0, 3]}, "prompt"),
        ({"prompt": [True, 3]}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "hello there", "messages": MSG}, "prompt"),
    ],
)
def test_bad_warmups_are_400(server, body, param):
    assert_error(post(server, "/v1/cache/warmup", {"model": MODEL} | body), 400, param)


def test_chunked_body_over_the_limit_is_413(server):
    def chunks():
        piece = b"x" * (1024 * 1024)
        yield b'{"model": "%s", "prompt": "' % MODEL.encode()
        for _ in range(9):
            yield piece
        yield b'"}'

    r = httpx.post(f"{server.base_url}/v1/completions", content=chunks(), headers=HEADERS,
                   timeout=60)
    assert "content-length" not in r.request.headers  # it went chunked
    assert_error(r, 413)


def test_stream_options_without_stream_is_400(server):
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 1,
            "stream_options": {"include_usage": True}}
    assert_error(post(server, "/v1/completions", body), 400, "stream_options")
    chat = {"model": MODEL, "messages": MSG, "max_tokens": 1, "stream": False,
            "stream_options": {"include_usage": True}}
    assert_error(post(server, "/v1/chat/completions", chat), 400, "stream_options")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/v1/cache/warmup"])
def test_empty_body_names_no_none(server, path):
    err = assert_error(post(server, path, raw=b""), 400)
    assert "None" not in err["message"]
