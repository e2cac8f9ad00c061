"""Hypothesis strategies for request bodies, shared by tests/e2e/test_fuzz.py and
bench/fuzz.py: valid bodies with one field made wrong, random JSON, and broken bytes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

MODEL = "smollm2-135m-instruct"
SURROGATES = ["a\ud800b", "\udfff", "\ud83d", "x\udc00"]
HUGE = [2**63, 2**64, -(2**64), 10**30, 1e308, -1e308, 1.5e-320]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from(HUGE),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(SURROGATES + ["", " ", "x" * 5000, "\x00", "{", "null"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=12,
)

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
TOOL = {"type": "function", "function": {"name": "f", "parameters": SCHEMA}}
# Values a field may take that are plausible, so mutations also reach deep checks.
PLAUSIBLE: dict[str, list[Any]] = {
    "response_format": [{"type": "json_object"}, {"type": "text"},
                        {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},
                        {"type": "json_schema", "json_schema": {"schema": {"type": "wat"}}},
                        {"type": "regex"}],
    "guided_json": [SCHEMA, "{\"type\": \"string\"}", {"$ref": "#/nope"}, "not json"],
    "guided_regex": ["[a-z]{1,3}", "(", "a**", "\\d+", ""],
    "guided_choice": [["yes", "no"], [], [""], ["a", 1]],
    "guided_grammar": ["start: \"a\"", "root ::= \"x\"", "???"],
    "tools": [[TOOL], [{"type": "function"}], [{"type": "function", "function": {"name": ""}}]],
    "tool_choice": ["auto", "none", "required", {"type": "function", "function": {"name": "f"}}],
    "stop": [["a"] * 17, ["\n"], "", ["x" * 3000]],
    "logit_bias": [{"5": 100}, {"-1": 1}, {"x": 1}, {str(10**9): 1}, {"5": 1e9}],
    "n": [1, 2, 64, 65, 0, -1],
    "seed": [0, -1, 2**64 - 1, 2**64],
    "temperature": [0, 2, 2.01, -0.1],
    "stream": [True, False, "true"],
    "stream_options": [{"include_usage": True}, {"include_usage": "yes"}, {}],
    "logprobs": [True, False, 3, 21],
    "top_logprobs": [0, 20, 21],
    "max_tokens": [1, 2, 0, -1, 10**30],
    "min_tokens": [0, 1, 10**6],
    "stop_token_ids": [[0], [10**9], [-1]],
    "prompt": ["Hi", "", [1, 2], [[1, 2], [3]], [10**9], [[]], ["a", "b"]],
    "messages": [[], [{"role": "user"}], [{"role": "user", "content": [{"type": "text"}]}],
                 [{"role": "user", "content": [{"type": "image_url",
                                                "image_url": {"url": "http://x"}}]}],
                 [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]],
}

BASES = {
    "/v1/completions": {"model": MODEL, "prompt": "Hi", "max_tokens": 1, "temperature": 0},
    "/v1/chat/completions": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                             "max_tokens": 1, "temperature": 0},
    "/v1/cache/warmup": {"model": MODEL, "prompt": "Hello there, how are you?"},
}
FIELDS = sorted(PLAUSIBLE) + ["model", "user", "echo", "suffix", "best_of", "top_p", "top_k",
                              "presence_penalty", "repetition_penalty", "metadata", "frobnicate"]
_LONG = ("max_tokens", "max_completion_tokens")


def _bounded(body: dict[str, Any]) -> dict[str, Any]:
    """Keep any valid body to 1-2 new tokens: a big valid max_tokens becomes an invalid one,
    and a body without one gets max_tokens 1 (else it would run to the context's end)."""
    if not any(key in body for key in _LONG):
        body["max_tokens"] = 1
    for key in _LONG:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 2:
            body[key] = 10**30
    return body


@st.composite
def mutated(draw: st.DrawFn, path: str) -> dict[str, Any]:
    """The endpoint's valid body with one to three fields set to something else."""
    body = dict(BASES[path])
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS))
        pool = PLAUSIBLE.get(field)
        value = draw(st.sampled_from(pool) if pool and draw(st.booleans()) else json_values)
        if draw(st.integers(0, 9)) == 0:
            body.pop(field, None)
        else:
            body[field] = value
    return body if path == "/v1/cache/warmup" else _bounded(body)


def encode(value: Any) -> bytes:
    # surrogatepass: lone surrogates go out as the raw bytes a careless client sends.
    return json.dumps(value, ensure_ascii=draw_ascii(value)).encode("utf-8", "surrogatepass")


def draw_ascii(value: Any) -> bool:
    return isinstance(value, dict) and len(value) % 2 == 0  # both spellings of non-ASCII text


@st.composite
def broken(draw: st.DrawFn, path: str) -> tuple[bytes, str]:
    """Bytes that are not a good JSON object: truncated, bad UTF-8, deep, duplicated keys,
    or a body that is not an object; with a content type that may be wrong."""
    good = encode(BASES[path])
    kind = draw(st.sampled_from(["truncate", "bad_utf8", "deep", "dupes", "not_object", "empty"]))
    if kind == "truncate":
        raw = good[: draw(st.integers(0, len(good) - 1))]
    elif kind == "bad_utf8":
        at = draw(st.integers(0, len(good)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\x00"]))
        raw = good[:at] + junk + good[at:]
    elif kind == "deep":
        depth = draw(st.sampled_from([50, 1000, 100_000]))
        inner = b"[" * depth + b"]" * depth
        raw = good[:-1] + b', "prompt": ' + inner + b"}"
    elif kind == "dupes":
        raw = good[:-1] + b', "model": "nope", "model": "' + MODEL.encode() + b'"}'
    elif kind == "not_object":
        raw = encode(draw(json_values.filter(lambda v: not isinstance(v, dict))))
    else:
        raw = b""
    ctype = draw(st.sampled_from(["application/json", "application/json", "text/plain",
                                  "application/x-www-form-urlencoded", ""]))
    return raw, ctype
