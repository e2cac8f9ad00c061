"""Function calling through the real server and the official openai client (SmolLM2: its
template has no tools, so they go through the Hermes-style instruction and parser)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.test_errors import assert_error, post

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "hour24": {"type": "boolean"}},
            "required": ["city", "hour24"],
        },
    },
}
ASK = [{"role": "user", "content": "What's the weather like in Boston today?"}]
# One earlier call in the history makes SmolLM2-135M call the tool again by itself (auto mode).
EARLIER_CALL = {"role": "assistant", "content": None, "tool_calls": [{
    "id": "call_1", "type": "function",
    "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'}}]}
FEW_SHOT = [{"role": "user", "content": "Weather in Paris?"}, EARLIER_CALL,
            {"role": "user", "content": "Weather in Boston?"}]
NAMED = {"type": "function", "function": {"name": "get_time"}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}


def create(client, **kw):
    args = {"model": MODEL, "messages": ASK, "tools": [WEATHER, TIME], "max_tokens": 60,
            "temperature": 0} | kw
    return client.chat.completions.create(**args)


def assert_valid_calls(message):
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def streamed(client, **kw):
    """(content, calls by index, finish_reason, the chunks' call deltas) of a streamed request."""
    content, calls, finish, pieces = "", {}, None, []
    for chunk in create(client, stream=True, **kw):
        for ch in chunk.choices:
            content += ch.delta.content or ""
            finish = ch.finish_reason or finish
            for d in ch.delta.tool_calls or []:
                pieces.append(d)
                call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or d.id
                call["name"] += d.function.name or ""
                call["arguments"] += d.function.arguments or ""
    return content, calls, finish, pieces


def test_the_originals_readme_example_shape(client):
    r = create(client, messages=FEW_SHOT, tools=[WEATHER], tool_choice="auto")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.role == "assistant"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_current_weather"
    assert "Boston" in json.loads(call.function.arguments)["location"]


def test_auto_mode_constrains_the_call_once_it_starts(client):
    # "days" is required by the schema: the model (whose earlier call had none) must add it.
    strict = json.loads(json.dumps(WEATHER))
    params = strict["function"]["parameters"]
    params["properties"]["days"] = {"type": "integer", "minimum": 1, "maximum": 7}
    params["required"] = ["location", "days"]
    for seed in range(3):
        r = create(client, messages=FEW_SHOT, tools=[strict], temperature=0.8, seed=seed)
        call = r.choices[0].message.tool_calls[0]
        jsonschema.validate(json.loads(call.function.arguments), params)


def test_auto_mode_answers_in_text_when_no_call(client):
    r = create(client, tool_choice="auto", max_tokens=12)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason in ("stop", "length")
    assert "<tool_call>" not in r.choices[0].message.content


@pytest.mark.parametrize("choice", ["required", NAMED])
def test_forced_calls_always_validate(client, choice):
    for seed in range(5):
        r = create(client, tool_choice=choice, temperature=1.0, seed=seed, parallel_tool_calls=False)
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls", msg
        assert len(msg.tool_calls) == 1 and msg.content is None
        assert_valid_calls(msg)
        if choice == NAMED:
            assert msg.tool_calls[0].function.name == "get_time"


@pytest.mark.parametrize("mode", ["auto", "required", "named"])
def test_stream_joins_to_the_whole_response(client, mode):
    kw = {"auto": {"messages": FEW_SHOT}, "required": {"tool_choice": "required"},
          "named": {"tool_choice": NAMED}}[mode]
    kw |= {"temperature": 0.7, "seed": 3, "parallel_tool_calls": False}
    whole = create(client, **kw).choices[0]
    content, calls, finish, pieces = streamed(client, **kw)
    assert finish == whole.finish_reason == "tool_calls"
    assert content == (whole.message.content or "") and "<tool_call>" not in content
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (t.function.name, t.function.arguments) for t in whole.message.tool_calls
    ]
    first = pieces[0]
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name and all(p.id is None and p.function.name is None for p in pieces[1:])


def test_parallel_calls(client):
    ask = [{"role": "user", "content": "Weather in Paris, and the time in Tokyo?"}]
    r = create(client, messages=ask, tool_choice="required", max_tokens=120)
    msg = r.choices[0].message
    assert len(msg.tool_calls) >= 2
    assert_valid_calls(msg)
    assert len({c.id for c in msg.tool_calls}) == len(msg.tool_calls)
    one = create(client, messages=ask, tool_choice="required", max_tokens=120, parallel_tool_calls=False)
    assert len(one.choices[0].message.tool_calls) == 1
    assert one.choices[0].finish_reason == "tool_calls"


def test_openai_stream_helper_accumulates_calls(client):
    with client.chat.completions.stream(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice=NAMED, max_tokens=60,
        temperature=0,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_time"
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["get_time"])


def test_none_leaves_tools_out(client):
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, temperature=0)
    r = create(client, tool_choice="none", max_tokens=5)
    assert r.usage.prompt_tokens == plain.usage.prompt_tokens
    assert r.choices[0].message.content == plain.choices[0].message.content
    assert r.choices[0].message.tool_calls is None


@pytest.mark.parametrize("empty", ["", None])
def test_history_with_calls_renders_and_the_cache_hits(client, empty):
    first = create(client, tool_choice=NAMED, seed=7, temperature=0.5,
                   messages=[{"role": "system", "content": f"Turn test {empty!r}."}, *ASK])
    call = first.choices[0].message.tool_calls[0]
    history = [
        {"role": "system", "content": f"Turn test {empty!r}."}, *ASK,
        {"role": "assistant", "content": empty, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "11:00"},
    ]
    # The next turn of the conversation: same tools, so the prompt shares the first turn's.
    second = create(client, messages=history, tool_choice="auto", max_tokens=8)
    assert second.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens // 2
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_tools_without_properties_and_strict_are_accepted(client):
    bare = {"type": "function", "function": {"name": "ping", "strict": True}}
    empty = {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}
    r = create(client, tools=[bare, empty], tool_choice="required", parallel_tool_calls=False)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name in ("ping", "noop") and json.loads(call.function.arguments) == {}


BAD = [
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": None, "tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "nonsense"}}}}}], "tool_choice": "required"},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"functions": [WEATHER["function"]]}, "functions"),
]


@pytest.mark.parametrize("extra,param", BAD)
def test_bad_tool_inputs_are_400s(server, extra, param):
    body = {"model": MODEL, "messages": ASK, "tools": [WEATHER, TIME], "max_tokens": 5} | extra
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(post(server, "/v1/chat/completions", body), 400, param)
    assert server.health()["status"] == "ok"
