"""Tool-call grammars, checked with llguidance and SmolLM2's tokenizer: every grammar is valid,
a correct call is accepted (and parses back to itself), an unknown tool or an extra key is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

llguidance = pytest.importorskip("llguidance")

from mlx_textgen.parsers import parse_tool_calls
from mlx_textgen.parsers.grammar_core import (
    ToolGrammarError,
    arguments_schema,
    tighten_schema,
)
from mlx_textgen.parsers.grammars import grammar_error, tool_call_grammar

from ._parser_cases import WEATHER_TOOLS

# A correct call of get_weather (city, days) in each format's grammar shape.
CALLS = {
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris","days":3}}\n</tool_call>',
    "qwen3_coder": "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
    "glm4": "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
    "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>",
    "llama3_json": '{"name": "get_weather", "parameters": {"city":"Paris","days":3}}',
    "mistral": '[TOOL_CALLS]get_weather[ARGS]{"city":"Paris","days":3}',
    "pythonic": '[get_weather(city="Paris", days=3)]',
    "minimax_m2": '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris'
    '</parameter>\n<parameter name="days">3</parameter>\n</invoke>\n</minimax:tool_call>',
    "kimi_k2": "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
    '<|tool_call_argument_begin|>{"city":"Paris","days":3}<|tool_call_end|><|tool_calls_section_end|>',
    "deepseek_v3": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
    '```json\n{"city":"Paris","days":3}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    "gemma4": '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>',
    "function_gemma": "<start_function_call>call:get_weather{city:<escape>Paris<escape>,days:3}"
    "<end_function_call>",
    "gpt_oss": "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
    '{"city":"Paris","days":3}<|call|>',
}
JSON_ARGUMENTS = {
    "hermes",
    "llama3_json",
    "mistral",
    "kimi_k2",
    "deepseek_v3",
    "gpt_oss",
    "pythonic",
}
EXPECTED = ("get_weather", {"city": "Paris", "days": 3})


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from mlx_textgen.models.default import DefaultModelMissing, default_model_path
    from mlx_textgen.models.gguf_file import read_gguf
    from mlx_textgen.models.gguf_tokenizer import build_tokenizer_files

    try:
        files = build_tokenizer_files(read_gguf(default_model_path()))
    except DefaultModelMissing as exc:
        pytest.skip(str(exc))
    path = Path(tmp_path_factory.mktemp("tok")) / "tokenizer.json"
    path.write_text(files.tokenizer_json, encoding="utf-8")
    return llguidance.LLTokenizer(str(path))


def _accepts(tokenizer, grammar: str, text: str) -> bool:
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    ok = matcher.consume_tokens(tokenizer.tokenize_str(text))
    return ok and not matcher.is_error() and matcher.is_accepting()


@pytest.mark.parametrize("fmt", sorted(CALLS))
def test_required_grammar_accepts_a_call_and_rejects_bad_ones(tokenizer, fmt: str) -> None:
    text = CALLS[fmt]
    grammar = tool_call_grammar(fmt, WEATHER_TOOLS).grammar
    assert llguidance.LLMatcher.validate_grammar(grammar) == ""
    assert _accepts(tokenizer, grammar, text)
    assert not _accepts(tokenizer, grammar, text.replace("get_weather", "get_wether"))
    if fmt in JSON_ARGUMENTS:  # an extra key in the arguments object
        assert not _accepts(tokenizer, grammar, text.replace("Paris", 'Paris","x":"1'))
    if "days" in text:  # a key the schema does not declare
        assert not _accepts(tokenizer, grammar, text.replace("days", "hours"))
    calls = parse_tool_calls(fmt, text, WEATHER_TOOLS).calls
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [EXPECTED]


@pytest.mark.parametrize("fmt", sorted(CALLS))
def test_auto_grammar_covers_what_follows_the_trigger(tokenizer, fmt: str) -> None:
    tg = tool_call_grammar(fmt, WEATHER_TOOLS, tool_choice="auto")
    assert tg.trigger and tg.trigger in CALLS[fmt]
    after = CALLS[fmt][CALLS[fmt].index(tg.trigger) + len(tg.trigger) :]
    assert _accepts(tokenizer, tg.grammar, after)
    assert not _accepts(tokenizer, tg.grammar, CALLS[fmt])  # the trigger itself is not repeated


@pytest.mark.parametrize("fmt", sorted(CALLS))
def test_named_function_and_parallel_modes(tokenizer, fmt: str) -> None:
    named = tool_call_grammar(
        fmt, WEATHER_TOOLS, tool_choice={"type": "function", "function": {"name": "ping"}}
    )
    assert not _accepts(tokenizer, named.grammar, CALLS[fmt])
    parallel = tool_call_grammar(fmt, WEATHER_TOOLS, parallel_tool_calls=True).grammar
    single = tool_call_grammar(fmt, WEATHER_TOOLS, parallel_tool_calls=False).grammar
    assert parallel != single or fmt == "gpt_oss"


def test_two_calls_only_with_parallel(tokenizer) -> None:
    two = CALLS["hermes"] + "\n" + CALLS["hermes"].replace("Paris", "Rome")
    assert _accepts(tokenizer, tool_call_grammar("hermes", WEATHER_TOOLS).grammar, two)
    single = tool_call_grammar("hermes", WEATHER_TOOLS, parallel_tool_calls=False).grammar
    assert not _accepts(tokenizer, single, two)
    assert len(parse_tool_calls("hermes", two).calls) == 2
    py_two = '[get_weather(city="Paris"), ping()]'
    assert _accepts(tokenizer, tool_call_grammar("pythonic", WEATHER_TOOLS).grammar, py_two)


def test_tool_without_parameters_takes_only_empty_object(tokenizer) -> None:
    grammar = tool_call_grammar(
        "hermes", WEATHER_TOOLS, tool_choice={"type": "function", "function": {"name": "ping"}}
    ).grammar
    assert _accepts(
        tokenizer, grammar, '<tool_call>\n{"name": "ping", "arguments": {}}\n</tool_call>'
    )
    assert not _accepts(
        tokenizer, grammar, '<tool_call>\n{"name": "ping", "arguments": {"a":1}}\n</tool_call>'
    )


def test_optional_arguments_may_be_left_out(tokenizer) -> None:
    for fmt, text in {
        "qwen3_coder": "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
        "pythonic": '[get_weather(city="Paris")]',
        "minimax_m2": '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n</invoke>\n</minimax:tool_call>',
    }.items():
        assert _accepts(tokenizer, tool_call_grammar(fmt, WEATHER_TOOLS).grammar, text), fmt


def test_open_schema_and_strict_are_kept() -> None:
    open_schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": True,
    }
    assert tighten_schema(open_schema)["additionalProperties"] is True
    nested = {"type": "object", "properties": {"o": {"type": "object", "properties": {"b": {}}}}}
    tight = tighten_schema(nested)
    assert tight["additionalProperties"] is False
    assert tight["properties"]["o"]["additionalProperties"] is False
    assert "additionalProperties" not in nested  # the caller's schema is not changed
    strict = {"name": "s", "strict": True, "parameters": nested}
    assert arguments_schema(strict) == nested
    assert arguments_schema({"name": "n"}) == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert arguments_schema({"name": "n", "parameters": {"type": "object"}})["properties"] == {}


def test_special_tokens_become_token_references() -> None:
    grammar = tool_call_grammar(
        "gpt_oss", WEATHER_TOOLS, special_tokens={"<|call|>", "<|message|>"}
    ).grammar
    assert " <|call|>" in grammar and '"<|call|>"' not in grammar
    assert '"<|constrain|>"' in grammar  # not declared special: matched as text


def test_bad_choices_are_errors() -> None:
    with pytest.raises(ToolGrammarError):
        tool_call_grammar("hermes", [])
    with pytest.raises(ToolGrammarError):
        tool_call_grammar(
            "hermes", WEATHER_TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    with pytest.raises(ToolGrammarError):
        tool_call_grammar("nope", WEATHER_TOOLS)
    with pytest.raises(ToolGrammarError):
        tool_call_grammar("hermes", WEATHER_TOOLS, tool_choice="none")


def test_grammar_error_reports_a_bad_schema() -> None:
    bad = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {"type": "object", "properties": {"a": {"type": "no-such-type"}}},
            },
        }
    ]
    assert grammar_error(tool_call_grammar("hermes", bad).grammar)
    assert grammar_error(tool_call_grammar("hermes", WEATHER_TOOLS).grammar) is None
