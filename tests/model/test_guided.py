"""Constrained decoding on the real model at temperature 1: every output matches.

All sequences of a test run in one batch, constrained beside unconstrained ones, so the
per-sequence masks are exercised the way the server runs them.
"""

from __future__ import annotations

import json
import re

import jsonschema
import lark
import pytest

from mlx_textgen.engine.request import FinishReason, Request, SamplingParams
from mlx_textgen.guided.forms import (
    JsonStyle, after_whitespace, choice_constraint, from_request, grammar_constraint,
)
from tests.guided_cases import ARITHMETIC_LARK, CHOICES, REGEXES, SCHEMAS
from tests.model.test_engine_loop import start_loop

SAMPLES = 3


@pytest.fixture(scope="module")
def loop(smollm2_gguf, cache_root):
    lp = start_loop(smollm2_gguf, cache_root, max_running=32)  # the 85 schema samples in 3 waves
    yield lp
    lp.stop()


def prompt(lp, text: str) -> list[int]:
    tok = lp.models["m"].hf_tokenizer
    chat = [{"role": "user", "content": text}]
    return tok.encode(tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))


def run(lp, requests: list[Request]) -> dict[str, tuple[str, FinishReason, str | None]]:
    """Submit every request at once; text, finish reason and error per request id."""
    texts = {r.request_id: "" for r in requests}
    done: dict[str, tuple[str, FinishReason, str | None]] = {}
    for r in requests:
        lp.submit(r)
    while len(done) < len(requests):
        out = lp.outs.get(timeout=300)
        if out.request_id not in texts:
            continue
        texts[out.request_id] += out.text
        if out.finished:
            done[out.request_id] = (texts[out.request_id], out.finish_reason, out.error)
    return done


def test_json_schemas_validate_at_temperature_one(loop):
    ids = prompt(loop, "Reply with a short JSON value.")
    reqs, schema_of = [], {}
    for name, schema in SCHEMAS.items():
        grammar = from_request({"guided_json": schema}, JsonStyle()).grammar
        for i in range(SAMPLES):
            rid = f"{name}-{i}"
            schema_of[rid] = schema
            reqs.append(Request(rid, ids, SamplingParams(max_tokens=120, temperature=1.0, seed=i,
                                                         grammar=grammar), "m"))
    reqs.append(Request("free", ids, SamplingParams(max_tokens=20, temperature=1.0), "m"))
    results = run(loop, reqs)
    assert len(SCHEMAS) >= 25
    stopped = 0
    for rid, (text, reason, error) in results.items():
        assert error is None, (rid, error)
        if rid == "free":
            continue
        if reason == FinishReason.STOP:
            stopped += 1
            jsonschema.validate(json.loads(text), schema_of[rid])
        else:  # cut by max_tokens: what there is must still be a prefix the grammar allows
            assert reason == FinishReason.LENGTH and text, rid
    assert stopped >= 0.9 * len(SCHEMAS) * SAMPLES


def test_regexes_choices_and_grammar(loop):
    ids = prompt(loop, "Answer briefly.")
    reqs, check = [], {}
    for k, rx in enumerate(REGEXES):
        grammar = from_request({"guided_regex": rx}, JsonStyle()).grammar
        for i in range(SAMPLES):
            rid = f"rx{k}-{i}"
            check[rid] = lambda t, rx=rx: re.fullmatch(rx, t) is not None
            reqs.append(Request(rid, ids, SamplingParams(max_tokens=40, temperature=1.0, seed=i,
                                                         grammar=grammar), "m"))
    choice = choice_constraint(CHOICES, "guided_choice").grammar
    arith = grammar_constraint(ARITHMETIC_LARK, "guided_grammar").grammar
    parser = lark.Lark(ARITHMETIC_LARK)
    for i in range(SAMPLES * 2):
        check[f"choice-{i}"] = lambda t: t in CHOICES
        reqs.append(Request(f"choice-{i}", ids, SamplingParams(max_tokens=10, temperature=1.0,
                                                               seed=i, grammar=choice), "m"))
        check[f"arith-{i}"] = lambda t: parser.parse(t) is not None
        reqs.append(Request(f"arith-{i}", ids, SamplingParams(max_tokens=24, temperature=1.0,
                                                              seed=i, grammar=arith), "m"))
    results = run(loop, reqs)
    for rid, (text, reason, error) in results.items():
        assert error is None, (rid, error)
        if reason == FinishReason.STOP or not rid.startswith("arith"):
            assert reason == FinishReason.STOP, (rid, text)
            assert check[rid](text), (rid, text)


def test_seeded_constrained_output_is_the_same_alone_and_batched(loop):
    ids = prompt(loop, "Give a person as JSON.")
    grammar = from_request({"guided_json": SCHEMAS["flat"]}, JsonStyle()).grammar
    params = SamplingParams(max_tokens=40, temperature=1.0, seed=42, grammar=grammar)
    alone = run(loop, [Request("alone", ids, params, "m")])["alone"]
    others = [Request(f"o{i}", prompt(loop, f"Count to {i}."), SamplingParams(max_tokens=12), "m")
              for i in range(3)]
    batched = run(loop, [*others, Request("batched", ids, params, "m")])["batched"]
    assert alone == batched


def test_max_tokens_cuts_a_constraint_with_length(loop):
    ids = prompt(loop, "Give a person as JSON.")
    grammar = from_request({"guided_json": SCHEMAS["flat"]}, JsonStyle()).grammar
    text, reason, _ = run(loop, [Request("cut", ids, SamplingParams(max_tokens=3, grammar=grammar), "m")])["cut"]
    assert reason == FinishReason.LENGTH
    assert text.startswith("{")


def test_a_constraint_after_a_marker(loop):
    """The reasoning hook: unconstrained until the marker text, then the grammar."""
    tok = loop.models["m"].hf_tokenizer
    (marker,) = tok.encode(":", add_special_tokens=False)
    ids = tok.encode("Question: is the sky blue? Answer", add_special_tokens=False)
    choice = after_whitespace(choice_constraint(["yes", "no"], "guided_choice").grammar)
    # The bias makes the marker the first token; under the grammar it is masked out again.
    params = SamplingParams(max_tokens=12, grammar=choice, grammar_trigger=":",
                            logit_bias={marker: 100.0})
    text, reason, error = run(loop, [Request("after", ids, params, "m")])["after"]
    assert error is None
    assert text.startswith(":") and text[1:].strip() in ("yes", "no"), text
    assert reason == FinishReason.STOP
