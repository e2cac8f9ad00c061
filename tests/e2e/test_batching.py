"""Continuous batching: concurrent requests decode together and each gets what it would alone."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import API_KEY, MODEL

SHORT = "The capital of France is"
LONG = ("Here is a list of fruits and their colours: " + "apple red, banana yellow, grape purple, " * 20
        + "and the colour of a lime is")
PROMPTS = [SHORT, LONG, "1, 2, 3, 4,", "def fibonacci(n):"]


async def greedy(aclient, prompt: str, **kw):
    r = await aclient.completions.create(
        model=MODEL, prompt=prompt, max_tokens=8, temperature=0, extra_body={"ignore_eos": True}, **kw
    )
    return r.choices[0].text


async def test_greedy_batched_equals_alone(aclient):
    alone = [await greedy(aclient, p) for p in PROMPTS]
    together = await asyncio.gather(*[greedy(aclient, p) for p in PROMPTS])
    assert together == alone


async def test_seeded_sampling_ignores_other_traffic(aclient):
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=77,
              extra_body={"ignore_eos": True})
    alone = (await aclient.completions.create(**kw)).choices[0].text
    noisy = await asyncio.gather(
        aclient.completions.create(**kw),
        *[greedy(aclient, p) for p in PROMPTS],
    )
    assert noisy[0].choices[0].text == alone


def test_n_prompt_prefilled_once(client, server):
    prompt = LONG
    before = server.health()["stats"]
    r = client.completions.create(model=MODEL, prompt=prompt, n=3, max_tokens=2, temperature=0)
    after = server.health()["stats"]
    assert [c.index for c in r.choices] == [0, 1, 2]
    computed = after["prefill_tokens"] - before["prefill_tokens"]
    cached = r.usage.prompt_tokens_details.cached_tokens
    assert computed == r.usage.prompt_tokens - 1 - cached  # once, not three times


def test_list_prompts_with_n_streamed(client):
    chunks = list(client.completions.create(
        model=MODEL, prompt=[SHORT, "1, 2, 3,"], n=2, max_tokens=3, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    ))
    by_index: dict[int, str] = {}
    finish: dict[int, str] = {}
    for c in chunks[:-1]:
        ch = c.choices[0]
        by_index[ch.index] = by_index.get(ch.index, "") + ch.text
        if ch.finish_reason:
            finish[ch.index] = ch.finish_reason
    assert sorted(by_index) == [0, 1, 2, 3] and set(finish.values()) == {"length"}
    assert by_index[0] == by_index[1] and by_index[2] == by_index[3]
    assert chunks[-1].usage.completion_tokens == 12
    single = client.completions.create(model=MODEL, prompt=[SHORT, "1, 2, 3,"], max_tokens=3, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert chunks[-1].usage.prompt_tokens == single.usage.prompt_tokens
    assert [by_index[0], by_index[2]] == [c.text for c in single.choices]


def test_list_of_conversations(client):
    convs = [[{"role": "user", "content": "Capital of France?"}], [{"role": "user", "content": "Say hi."}]]
    r = client.chat.completions.create(model=MODEL, messages=convs, max_tokens=3, temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    one = client.chat.completions.create(model=MODEL, messages=convs[1], max_tokens=3, temperature=0)
    assert r.choices[2].message.content == one.choices[0].message.content
    streamed = list(client.chat.completions.create(
        model=MODEL, messages=convs, max_tokens=3, temperature=0, stream=True))
    assert {c.choices[0].index for c in streamed} == {0, 1}


def test_seeded_n_choices_differ_but_repeat(client):
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=11, n=3,
              extra_body={"ignore_eos": True})
    a = [c.text for c in client.completions.create(**kw).choices]
    b = [c.text for c in client.completions.create(**kw).choices]
    assert a == b and len(set(a)) > 1


async def test_long_prompt_prefill_interleaves_with_running_stream(aclient, tokenizer):
    """While a long prompt is prefilled chunk by chunk, a running stream keeps getting tokens."""
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 150  # ~1,500 tokens: 3 chunks
    assert len(tokenizer.encode(long_prompt)) > 1200
    running = await aclient.completions.create(
        model=MODEL, prompt="Count: 1, 2, 3,", max_tokens=300, temperature=0, stream=True,
        extra_body={"ignore_eos": True},
    )
    received = 0
    late = None

    async def consume():
        nonlocal received
        async for _ in running:
            received += 1
            if late is not None and late.done():
                break

    consumer = asyncio.create_task(consume())
    while received == 0:
        await asyncio.sleep(0.01)  # poll the stream's own progress, not the clock
    before = received
    late = asyncio.ensure_future(aclient.completions.create(
        model=MODEL, prompt=long_prompt, max_tokens=1, temperature=0))
    await late
    during = received - before
    await running.close()
    consumer.cancel()
    assert during >= 2, f"the running stream got {during} tokens while 1,500 prompt tokens were prefilled"


def test_engine_counters_on_health(client, server):
    """Decode steps and the engine's seconds are counted, and an admin call brings them up
    to date (the last step of a request is counted after its output is sent)."""
    import httpx

    headers = {"Authorization": f"Bearer {API_KEY}"}
    httpx.get(f"{server.base_url}/v1/cache", headers=headers, timeout=60).raise_for_status()
    before = server.health()["stats"]
    r = client.completions.create(model=MODEL, prompt=SHORT, max_tokens=3, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 3
    httpx.get(f"{server.base_url}/v1/cache", headers=headers, timeout=60).raise_for_status()
    after = server.health()["stats"]
    delta = {k: after[k] - before[k] for k in after}
    assert delta["decode_tokens"] == 3
    assert delta["decode_steps"] == 3  # alone: one token a step
    assert delta["decode_seconds"] > 0 and delta["prefill_seconds"] >= 0
    assert delta["busy_seconds"] >= delta["decode_seconds"] + delta["prefill_seconds"]
    slow = [delta[f"decode_steps_over_{ms}ms"] for ms in (30, 100, 300)]
    assert 3 >= slow[0] >= slow[1] >= slow[2] >= 0
