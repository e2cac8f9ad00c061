"""/v1/completions against the real server and model, through the official openai client."""

from __future__ import annotations

import math

import pytest

from tests.e2e.conftest import MODEL

PARIS = "The capital of France is"


def complete(client, **kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("temperature", 0)
    return client.completions.create(**kw)


def test_greedy_answer_is_paris(client):
    r = complete(client, prompt=PARIS, max_tokens=4)
    assert "Paris" in r.choices[0].text
    assert r.object == "text_completion" and r.model == MODEL


def test_usage_arithmetic_and_length_finish(client):
    r = complete(client, prompt="Usage check. " + PARIS, max_tokens=3, extra_body={"ignore_eos": True})
    u = r.usage
    assert r.choices[0].finish_reason == "length"
    assert u.completion_tokens == 3
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens == 0


@pytest.mark.parametrize(
    "prompt,count",
    [
        (PARIS, 1),
        ([PARIS, "One, two, three,"], 2),
        ([504, 3575, 282, 4649, 314], 1),
        ([[504, 3575, 282, 4649, 314], [4649, 314]], 2),
    ],
)
def test_prompt_forms(client, prompt, count):
    r = complete(client, prompt=prompt, max_tokens=2)
    assert [c.index for c in r.choices] == list(range(count))
    assert all(c.finish_reason in ("stop", "length") for c in r.choices)


def test_n_choices_have_indices_and_usage(client):
    r = complete(client, prompt=PARIS, max_tokens=2, n=2, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text == r.choices[1].text  # greedy choices agree
    single = complete(client, prompt=PARIS, max_tokens=2)
    assert r.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt counts once
    assert r.usage.completion_tokens == sum(2 for _ in r.choices)


def test_echo_prepends_prompt(client):
    r = complete(client, prompt=PARIS, max_tokens=2, echo=True)
    assert r.choices[0].text.startswith(PARIS)


def test_logprobs_are_distribution_values(client):
    r = complete(client, prompt=PARIS, max_tokens=3, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 3
    assert "".join(lp.tokens) == r.choices[0].text
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and len(top) == 2
        assert math.isclose(max(top.values()), chosen, abs_tol=1e-4)  # greedy picks the top one


def test_stream_joins_to_non_stream_text(client):
    full = complete(client, prompt=PARIS, max_tokens=6)
    chunks = list(
        complete(client, prompt=PARIS, max_tokens=6, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [full.choices[0].finish_reason]


def test_stop_string_never_leaks(client):
    base = complete(client, prompt=PARIS, max_tokens=8, extra_body={"ignore_eos": True}).choices[0].text
    stop = base[3:6]
    assert stop.strip(), base
    for stream in (False, True):
        r = complete(
            client, prompt=PARIS, max_tokens=8, stop=[stop], stream=stream, extra_body={"ignore_eos": True}
        )
        text = "".join(c.choices[0].text for c in r if c.choices) if stream else r.choices[0].text
        assert stop not in text
        assert text == base[: base.index(stop)]


def test_seed_is_deterministic(client):
    kw = dict(prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=1234)
    a = complete(client, **kw).choices[0].text
    b = complete(client, **kw).choices[0].text
    assert a == b


def test_logit_bias_forces_a_token(client, tokenizer):
    (tok,) = tokenizer.encode(" blue", add_special_tokens=False)
    r = complete(client, prompt=PARIS, max_tokens=3, logit_bias={str(tok): 100})
    assert r.choices[0].text == " blue" * 3


def test_stop_token_ids_and_min_tokens(client, tokenizer):
    first = complete(client, prompt=PARIS, max_tokens=1).choices[0].text
    first_id = tokenizer.encode(PARIS + first, add_special_tokens=False)[-1]
    r = complete(client, prompt=PARIS, max_tokens=4, extra_body={"stop_token_ids": [first_id]})
    assert r.choices[0].text == "" and r.choices[0].finish_reason == "stop"
    r2 = complete(
        client, prompt=PARIS, max_tokens=3,
        extra_body={"stop_token_ids": [first_id], "min_tokens": 2, "ignore_eos": True},
    )
    assert r2.usage.completion_tokens >= 2 and r2.choices[0].text


def test_negative_bias_bans_the_greedy_token(client, tokenizer):
    first = complete(client, prompt=PARIS, max_tokens=1).choices[0].text
    first_id = tokenizer.encode(PARIS + first, add_special_tokens=False)[-1]
    r = complete(client, prompt=PARIS, max_tokens=1, logit_bias={str(first_id): -100})
    assert r.choices[0].text != first


def test_penalties_and_sampling_knobs_are_accepted(client):
    r = complete(
        client, prompt="a a a a a a", max_tokens=4, temperature=0.7, top_p=0.9, seed=3,
        presence_penalty=1.5, frequency_penalty=1.0, user="u1",
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.3},
    )
    assert r.usage.completion_tokens >= 1


def test_prompt_token_count_matches_tokenizer(client, tokenizer):
    r = complete(client, prompt=PARIS, max_tokens=1)
    assert r.usage.prompt_tokens == len(tokenizer.encode(PARIS))


async def test_async_client_concurrent(aclient):
    import asyncio

    rs = await asyncio.gather(
        *[aclient.completions.create(model=MODEL, prompt=PARIS, max_tokens=3, temperature=0) for _ in range(3)]
    )
    texts = {r.choices[0].text for r in rs}
    assert len(texts) == 1 and "Paris" in texts.pop()
