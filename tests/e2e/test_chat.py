"""/v1/chat/completions against the real server and model, sync and async."""

from __future__ import annotations

from tests.e2e.conftest import MODEL

ASK = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def chat(client, messages=ASK, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 4)
    return client.chat.completions.create(model=MODEL, messages=messages, **kw)


def test_answer_and_shape(client):
    r = chat(client, max_tokens=8)
    msg = r.choices[0].message
    assert r.object == "chat.completion" and msg.role == "assistant"
    assert "Paris" in msg.content
    assert r.choices[0].logprobs is None and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_roles_parts_names_and_developer(client):
    messages = [
        {"role": "developer", "content": "You answer briefly."},
        {"role": "user", "name": "alice", "content": [{"type": "text", "text": "Capital of France?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Paris"},
        {"role": "user", "content": "So?"},
    ]
    r = chat(client, messages)
    assert r.choices[0].message.content


def test_developer_equals_system(client):
    a = chat(client, [{"role": "developer", "content": "Be brief."}, *ASK])
    b = chat(client, [{"role": "system", "content": "Be brief."}, *ASK])
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.prompt_tokens == b.usage.prompt_tokens


def test_final_assistant_message_is_continued(client):
    prefill = [*ASK, {"role": "assistant", "content": "The capital of France is"}]
    r = chat(client, prefill, max_tokens=3)
    answered = chat(client, ASK, max_tokens=3)
    assert "Paris" in r.choices[0].message.content
    assert r.usage.prompt_tokens > answered.usage.prompt_tokens


def test_stream_matches_and_usage_chunk(client):
    full = chat(client, max_tokens=6)
    chunks = list(chat(client, max_tokens=6, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(chat(client, max_tokens=2, stream=True))
    assert all(c.choices for c in chunks)


def test_logprobs_with_top(client):
    r = chat(client, max_tokens=3, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens or r.choices[0].finish_reason == "stop"
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        assert t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob
        assert bytes(t.bytes).decode() == t.token


def test_max_completion_tokens_and_n(client):
    r = chat(client, max_tokens=None, max_completion_tokens=2, n=2, extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 4


def test_stream_n_indices(client):
    chunks = list(chat(client, max_tokens=2, n=2, stream=True, extra_body={"ignore_eos": True}))
    indices = {c.choices[0].index for c in chunks}
    assert indices == {0, 1}
    finished = [c.choices[0].index for c in chunks if c.choices[0].finish_reason]
    assert sorted(finished) == [0, 1]


def test_accepted_noop_fields(client):
    r = chat(
        client, user="u", metadata={"k": "v"}, store=False, service_tier="auto",
        seed=None, stop=None, extra_body={"prompt_cache_key": "x", "chat_template_kwargs": {}},
    )
    assert r.choices[0].message.content is not None


async def test_async_stream(aclient):
    stream = await aclient.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=8, temperature=0, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "Paris" in text
