"""Reasoning through the real server: SmolLM2 with a chat template whose generation prompt opens
``<think>`` (so the deepseek_r1 format is detected), thinking budgets, reasoning_content."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
import yaml

from tests.e2e.server import ServerProcess

MODEL = "thinker"
THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)
ASK = [{"role": "user", "content": "Write a short poem about the sea."}]
SEPARATE = {"use_reasoning_content": True}


@pytest.fixture(scope="module")
def client(smollm2_gguf, cache_root, tmp_path_factory):
    cfg = {"model_configs": [{
        "model_id_or_path": smollm2_gguf, "model_name": MODEL,
        "tokenizer_kwargs": {"chat_template": THINK_TEMPLATE},
    }]}
    path = tmp_path_factory.mktemp("cfg") / "model_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    srv = ServerProcess(["--config-file", str(path), "--use-reasoning-content"], cache_root)
    yield openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key="x", max_retries=0, timeout=120)
    srv.stop()


def create(client, extra=None, **kw):
    args = {"model": MODEL, "messages": ASK, "max_tokens": 40, "temperature": 0} | kw
    return client.chat.completions.create(**args, extra_body=extra or {})


def reasoning_of(message):
    extra = message.model_extra or {}
    assert extra.get("reasoning") == extra.get("reasoning_content")
    return extra.get("reasoning_content")


def test_budget_ends_the_thinking_and_counts_it(client):
    for n in (8, 15):
        r = create(client, {**SEPARATE, "max_reasoning_tokens": n})
        usage, msg = r.usage, r.choices[0].message
        assert 0 < usage.completion_tokens_details.reasoning_tokens <= n
        assert usage.completion_tokens > usage.completion_tokens_details.reasoning_tokens
        thinking = reasoning_of(msg)
        assert thinking and "</think>" not in thinking and "<think>" not in thinking
        assert msg.content is not None and "</think>" not in msg.content


def test_the_server_default_separates_and_a_request_can_inline(client):
    r = create(client, {"max_reasoning_tokens": 6}, max_tokens=10)
    assert reasoning_of(r.choices[0].message) and "</think>" not in r.choices[0].message.content
    r = create(client, {"thinking_token_budget": 10, "use_reasoning_content": False})
    msg = r.choices[0].message
    assert reasoning_of(msg) is None
    head, sep, _ = msg.content.partition("</think>")
    assert sep and head.strip()  # the thinking, then its end marker, in the content
    assert r.usage.completion_tokens_details.reasoning_tokens <= 10


def test_stream_matches_and_never_mixes(client):
    extra = {**SEPARATE, "max_reasoning_tokens": 12}
    whole = create(client, extra, seed=1, temperature=0.7)
    reasoning, content, usage = "", "", None
    for chunk in create(client, extra, seed=1, temperature=0.7, stream=True,
                        stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for ch in chunk.choices:
            delta = ch.delta.model_extra or {}
            assert not (delta.get("reasoning_content") and ch.delta.content)
            reasoning += delta.get("reasoning_content") or ""
            content += ch.delta.content or ""
    assert reasoning == reasoning_of(whole.choices[0].message)
    assert content == whole.choices[0].message.content
    assert usage.completion_tokens_details.reasoning_tokens == (
        whole.usage.completion_tokens_details.reasoning_tokens
    )


@pytest.mark.parametrize("extra", [
    {"max_reasoning_tokens": 0}, {"reasoning_effort": "none"},
    {"chat_template_kwargs": {"enable_thinking": False}},
])
def test_thinking_off(client, extra):
    r = create(client, {**SEPARATE, **extra}, max_tokens=8)
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    assert reasoning_of(r.choices[0].message) is None
    assert r.choices[0].message.content


def test_structured_output_after_the_thinking(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
    r = create(client, {**SEPARATE, "max_reasoning_tokens": 10}, max_tokens=60,
               response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    msg = r.choices[0].message
    assert reasoning_of(msg)
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(msg.content), schema)


def test_forced_tool_call_after_the_thinking(client):
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string", "maxLength": 30}}, "required": ["q"]}}}
    r = create(client, {**SEPARATE, "max_reasoning_tokens": 10}, max_tokens=60, tools=[tool],
               tool_choice="required", parallel_tool_calls=False)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and reasoning_of(choice.message)
    assert json.loads(choice.message.tool_calls[0].function.arguments)["q"]


def test_bad_effort_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        create(client, reasoning_effort="extreme")
    assert err.value.body["param"] == "reasoning_effort"
