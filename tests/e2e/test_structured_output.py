"""Structured output through the real server and the official openai client."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.e2e.conftest import API_KEY, MODEL
from tests.guided_cases import SCHEMAS

ASK = [{"role": "user", "content": "Describe a person as JSON."}]


class Person(BaseModel):
    name: str
    age: int | None
    city: str


def test_parse_with_a_pydantic_model(client):
    for seed in range(2):
        r = client.chat.completions.parse(
            model=MODEL, messages=ASK, response_format=Person, temperature=1.0, seed=seed,
            max_completion_tokens=80,
        )
        choice = r.choices[0]
        if choice.finish_reason == "stop":
            assert isinstance(choice.message.parsed, Person)
        else:
            assert choice.finish_reason == "length"


def test_json_object_mode_and_schema_on_completions(client):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format={"type": "json_object"}, max_tokens=60, temperature=0,
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].message.content.startswith("{")
    schema = SCHEMAS["enum"]
    c = client.completions.create(model=MODEL, prompt="A color in JSON:", max_tokens=20,
                                  extra_body={"guided_json": schema})
    assert c.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(c.choices[0].text), schema)


def test_streaming_joins_to_valid_json(client):
    schema = SCHEMAS["nested"]
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, stream=True, max_tokens=80, temperature=0,
        extra_body={"guided_json": schema}, stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads(text), schema)
    assert usage.completion_tokens > 0


async def test_mixed_batch_of_constrained_and_free_requests(aclient):
    regex = r"[0-9]{3}-[0-9]{4}"

    async def constrained(i: int) -> str:
        r = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Phone number {i}?"}],
            max_tokens=16, temperature=1.0, seed=i, extra_body={"guided_regex": regex})
        assert r.choices[0].finish_reason == "stop"
        return r.choices[0].message.content

    async def free(i: int) -> str:
        r = await aclient.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Say {i}."}], max_tokens=6, temperature=0)
        return r.choices[0].message.content

    results = await asyncio.gather(*(constrained(i) for i in range(3)), *(free(i) for i in range(3)))
    assert all(re.fullmatch(regex, t) for t in results[:3]), results
    assert all(isinstance(t, str) for t in results[3:])


def test_n_choices_and_prompt_lists_each_match(client):
    schema = SCHEMAS["integer_range"]
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, n=4, temperature=1.0, seed=3, max_tokens=20,
        extra_body={"structured_outputs": {"json": schema}})
    assert len(r.choices) == 4
    for ch in r.choices:
        assert ch.finish_reason == "stop"
        jsonschema.validate(json.loads(ch.message.content), schema)
    c = client.completions.create(
        model=MODEL, prompt=["Pick one:", "Your choice:", "Answer:"], max_tokens=8, temperature=1.0,
        extra_body={"guided_choice": ["alpha", "beta", "C++"]})
    assert sorted(ch.index for ch in c.choices) == [0, 1, 2]
    assert all(ch.text in ("alpha", "beta", "C++") and ch.finish_reason == "stop" for ch in c.choices)


def test_same_seed_same_constrained_output(client):
    kw = dict(model=MODEL, messages=ASK, temperature=1.0, seed=11, max_tokens=40,
              extra_body={"guided_json": SCHEMAS["flat"]})
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_max_tokens_cut_is_length_and_logprobs_are_of_the_masked_distribution(client):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=4, temperature=0, logprobs=True, top_logprobs=5,
        extra_body={"guided_json": SCHEMAS["flat"]})
    ch = r.choices[0]
    assert ch.finish_reason == "length" and ch.message.content.startswith('{"')
    first = ch.logprobs.content[0]
    # Only `{"` (or `{`) can open this object: the masked distribution puts all mass there,
    # and tokens the mask rules out are no alternatives.
    assert first.logprob > -1e-3
    assert first.top_logprobs and all(t.token.startswith("{") for t in first.top_logprobs)


def test_a_stop_string_still_cuts_a_constrained_output(client):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=30, temperature=0, stop=['":'],
        extra_body={"guided_json": SCHEMAS["flat"]})
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content in ('{"name', '{"age')


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"guided_regex": "a[b"}, "guided_regex"),
        ({"guided_json": {"type": "strin"}}, "guided_json"),
        ({"guided_json": "{nope"}, "guided_json"),
        ({"guided_grammar": "start: missing_rule"}, "guided_grammar"),
        ({"guided_regex": "a", "guided_choice": ["x"]}, "guided_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "array", "uniqueItems": True}}}}, "response_format.json_schema.schema"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"structured_outputs": {"regex": "a", "json": {}}}, "structured_outputs"),
        ({"guided_choice": "abc"}, "guided_choice"),
        ({"json_schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}}, "json_schema"),
    ],
)
def test_invalid_constraints_are_400s_naming_the_field(client, server, extra, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, extra_body=extra)
    body = err.value.body
    assert err.value.status_code == 400 and body["param"] == param, body
    assert body["type"] == "invalid_request_error" and body["message"]
    health = httpx.get(f"{server.base_url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["in_flight"] == 0


def test_guided_json_given_as_a_wrong_type_is_a_400(server):
    r = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=30,
                   headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"model": MODEL, "messages": ASK, "guided_json": 5})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("guided_json")
