"""Tool-call parsers: every format parsed whole and streamed (char by char, random chunks, a
split at every position), back-to-back calls, text around calls, malformed calls as content."""

from __future__ import annotations

import json
import random

import pytest

from mlx_textgen.parsers import (
    TOOL_FORMATS,
    Delta,
    ParsedToolCalls,
    UnknownParserError,
    accumulate,
    get_tool_format,
    make_tool_parser,
    parse_tool_calls,
)

from ._parser_cases import CASES, MALFORMED, WEATHER_TOOLS


def _calls(result: ParsedToolCalls) -> list[tuple[str, dict]]:
    return [(c.name, json.loads(c.arguments)) for c in result.calls]


def _stream(fmt: str, pieces: list[str]) -> tuple[ParsedToolCalls, list[Delta]]:
    parser = make_tool_parser(fmt, WEATHER_TOOLS)
    deltas = [parser.feed(p) for p in pieces] + [parser.finish()]
    return accumulate(deltas), deltas


def _chunks(text: str, rng: random.Random) -> list[str]:
    out, at = [], 0
    while at < len(text):
        size = rng.randint(1, 7)
        out.append(text[at : at + size])
        at += size
    return out


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_whole_text(fmt: str, text: str, content: str, calls: list) -> None:
    result = parse_tool_calls(fmt, text, WEATHER_TOOLS)
    assert result.content == content
    assert _calls(result) == calls
    assert result.malformed == []
    assert all(c.id.startswith("call_") and len(c.id) > 10 for c in result.calls)
    assert len({c.id for c in result.calls}) == len(result.calls)


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_streamed_char_by_char_and_random_chunks(
    fmt: str, text: str, content: str, calls: list
) -> None:
    joined, _ = _stream(fmt, list(text))
    assert (joined.content, _calls(joined)) == (content, calls)
    rng = random.Random(len(text))
    for _ in range(5):
        joined, _ = _stream(fmt, _chunks(text, rng))
        assert (joined.content, _calls(joined)) == (content, calls)


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_split_at_every_position(fmt: str, text: str, content: str, calls: list) -> None:
    for cut in range(1, len(text)):
        joined, _ = _stream(fmt, [text[:cut], text[cut:]])
        assert (joined.content, _calls(joined)) == (content, calls), cut


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_openai_delta_shape(fmt: str, text: str, content: str, calls: list) -> None:
    _, deltas = _stream(fmt, list(text))
    pieces = [p for d in deltas for p in d.tool_calls]
    seen: set[int] = set()
    for piece in pieces:
        wire = piece.to_openai()
        if piece.index not in seen:  # the first delta of a call names it
            seen.add(piece.index)
            assert wire["id"].startswith("call_") and wire["type"] == "function"
            assert wire["function"]["name"] and wire["function"]["arguments"] == ""
        else:
            assert set(wire) == {"index", "function"} and set(wire["function"]) == {"arguments"}
    assert sorted(seen) == list(range(len(calls)))


MARKUP = (
    "<tool_call>",
    "</tool_call>",
    "[TOOL_CALLS]",
    "[ARGS]",
    "<|python_tag|>",
    "<|tool_call",
    "<minimax:",
    "<invoke",
    "<arg_key>",
    "<function=",
    "<|channel|>",
    "<|message|>",
    "<｜tool",
    "call:get_weather",
    "<start_function_call>",
    "<|start|>",
)


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_no_markup_leaks_into_content_deltas(
    fmt: str, text: str, content: str, calls: list
) -> None:
    if not calls:
        return
    _, deltas = _stream(fmt, list(text))
    for delta in deltas:
        assert not any(m in delta.content for m in MARKUP), delta.content
        # No delta carries a possible marker prefix that a later delta completes.
        assert not delta.content.endswith("<") and not delta.content.endswith("[")


@pytest.mark.parametrize(("fmt", "text", "region"), MALFORMED)
def test_malformed_call_is_content_and_reported(fmt: str, text: str, region: str) -> None:
    result = parse_tool_calls(fmt, text, WEATHER_TOOLS)
    assert result.calls == []
    assert result.malformed == [region]
    assert region in result.content
    assert result.content.replace(" ", "") == text.replace(" ", "")
    streamed, _ = _stream(fmt, list(text))
    assert (streamed.content, streamed.malformed) == (result.content, result.malformed)


def test_malformed_call_then_a_good_one() -> None:
    text = '<tool_call>{oops}</tool_call> and <tool_call>{"name": "ping"}</tool_call>'
    result = parse_tool_calls("hermes", text)
    assert result.content == "<tool_call>{oops}</tool_call> and"
    assert [c.name for c in result.calls] == ["ping"]


def test_text_after_calls_stays_content() -> None:
    text = '<tool_call>{"name": "ping"}</tool_call>\n\nI called ping.'
    result = parse_tool_calls("hermes", text)
    assert result.content == "I called ping." and [c.name for c in result.calls] == ["ping"]


def test_content_streams_before_the_call_finishes() -> None:
    parser = make_tool_parser("hermes")
    assert parser.feed("Hello wor").content == "Hello wor"
    assert parser.feed("ld <tool").content == "ld"  # the space waits: it may precede a call
    assert parser.feed('_call>{"name": "ping"}').content == ""
    delta = parser.feed("</tool_call>")
    assert [p.name for p in delta.tool_calls if p.name] == ["ping"]
    assert parser.num_calls == 1


def test_plain_text_is_untouched_in_every_format() -> None:
    text = "Plain answer: 3 < 4, [x] and {y}.\n"
    for fmt in TOOL_FORMATS:
        assert parse_tool_calls(fmt, text).content == text, fmt


def test_qwen3_coder_values_follow_the_schema() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "n": {"type": "number"},
                        "ok": {"type": "boolean"},
                        "tags": {"type": "array"},
                        "zip": {"type": "string"},
                        "opt": {"type": ["integer", "null"]},
                    },
                },
            },
        }
    ]
    text = (
        "<tool_call>\n<function=f>\n<parameter=n>\n2.5\n</parameter>\n<parameter=ok>\ntrue\n"
        '</parameter>\n<parameter=tags>\n["a"]\n</parameter>\n<parameter=zip>\n01234\n'
        "</parameter>\n<parameter=opt>\nnull\n</parameter>\n</function>\n</tool_call>"
    )
    args = json.loads(parse_tool_calls("qwen3_coder", text, tools).calls[0].arguments)
    assert args == {"n": 2.5, "ok": True, "tags": ["a"], "zip": "01234", "opt": None}
    # Without the tools, values stay text.
    args = json.loads(parse_tool_calls("qwen3_coder", text).calls[0].arguments)
    assert args["n"] == "2.5" and args["zip"] == "01234"


def test_registry_names_aliases_and_errors() -> None:
    assert get_tool_format("json_tools") is get_tool_format("hermes")
    assert get_tool_format("GLM47") is get_tool_format("glm4")
    with pytest.raises(UnknownParserError) as err:
        get_tool_format("nope")
    assert "hermes" in str(err.value) and "qwen3_coder" in str(err.value)
    for name, fmt in TOOL_FORMATS.items():
        assert fmt.name == name and fmt.start_marker


def test_feed_after_finish_raises() -> None:
    parser = make_tool_parser("hermes")
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("x")
    assert not parser.finish()


STREAMABLE = {"hermes", "llama3_json", "mistral", "gpt_oss"}


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_stream_arguments_mode(fmt: str, text: str, content: str, calls: list) -> None:
    whole = parse_tool_calls(fmt, text, WEATHER_TOOLS, stream_arguments=True)
    assert (whole.content, _calls(whole)) == (content, calls)
    parser = make_tool_parser(fmt, WEATHER_TOOLS, stream_arguments=True)
    deltas = [parser.feed(ch) for ch in text] + [parser.finish()]
    joined = accumulate(deltas)
    assert (joined.content, _calls(joined)) == (content, calls)
    assert [c.arguments for c in joined.calls] == [c.arguments for c in whole.calls]
    rng = random.Random(3)
    for _ in range(3):
        chunked = make_tool_parser(fmt, WEATHER_TOOLS, stream_arguments=True)
        got = accumulate([chunked.feed(p) for p in _chunks(text, rng)] + [chunked.finish()])
        assert (got.content, [c.arguments for c in got.calls]) == (
            content,
            [c.arguments for c in whole.calls],
        )
    fragments = sum(1 for d in deltas for p in d.tool_calls if p.name is None and p.arguments)
    if (
        fmt in STREAMABLE
        and calls
        and all(a for _, a in calls)
        and "[{" not in text
        and '"{' not in text
    ):
        assert fragments > 2 * len(calls)  # arguments went out piece by piece
        first_name = next(i for i, d in enumerate(deltas) if any(p.name for p in d.tool_calls))
        assert first_name < len(text) - 5  # the name went out before the call ended


def test_stream_arguments_keeps_the_models_json_text() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city":  "Paris"}}</tool_call>'
    assert parse_tool_calls("hermes", text, stream_arguments=True).calls[0].arguments == (
        '{"city":  "Paris"}'
    )
    assert parse_tool_calls("hermes", text).calls[0].arguments == '{"city": "Paris"}'


def test_parsers_never_import_mlx() -> None:
    # The HTTP process imports the parsers and must stay free of MLX (mlx_lm imports it too).
    import subprocess
    import sys

    code = (
        "import sys, mlx_textgen.parsers, mlx_textgen.parsers.grammars, mlx_textgen.chat.tools\n"
        "from mlx_textgen.parsers import detect_reasoning_parser\n"
        "detect_reasoning_parser('<think>{{ messages }}')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_call_of_a_tool_not_given_is_content() -> None:
    text = '<tool_call>{"name": "launch", "arguments": {}}</tool_call>'
    result = parse_tool_calls("hermes", text, WEATHER_TOOLS)
    assert result.calls == [] and result.malformed == [text] and result.content == text
    assert [c.name for c in parse_tool_calls("hermes", text).calls] == ["launch"]  # no tools given


def test_streaming_never_opens_a_call_of_a_tool_not_given() -> None:
    text = '<tool_call>{"name": "launch", "arguments": {"when": "now"}}</tool_call>'
    parser = make_tool_parser("hermes", WEATHER_TOOLS, stream_arguments=True)
    deltas = [parser.feed(ch) for ch in text] + [parser.finish()]
    assert not any(d.tool_calls for d in deltas)
    assert accumulate(deltas).content == text


def test_bracket_scanner_resumes_where_it_stopped() -> None:
    from mlx_textgen.parsers.scan import BracketScanner, bracket_end

    text = 'x{"a": "}\\"]", "b": [1, {"c": "{"}], "d": \'}\'} tail'
    for quotes in ('"', "\"'"):
        resumed = BracketScanner(1, quotes)
        for cut in range(2, len(text) + 1):
            assert resumed.scan(text[:cut]) == bracket_end(text[:cut], 1, quotes), (quotes, cut)
    assert bracket_end(text, 1, "\"'") == text.index(" tail")
    assert bracket_end("{]", 0) == 2  # a mismatched bracket ends the scan for the parse to refuse
