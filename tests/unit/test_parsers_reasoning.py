"""Reasoning parsers: reasoning and content never mix, streamed at any split, and the markers
the engine needs for a thinking budget."""

from __future__ import annotations

import random

import pytest

from mlx_textgen.parsers import (
    REASONING_FORMATS,
    ReasoningDelta,
    UnknownParserError,
    get_reasoning_format,
    make_reasoning_parser,
    make_tool_parser,
)

# (format, starts_in_reasoning, model text, reasoning, content)
CASES: list[tuple[str, bool | None, str, str, str]] = [
    (
        "deepseek_r1",
        None,
        "Let me think.\n</think>\n\nThe answer is 4.",
        "Let me think.\n",
        "The answer is 4.",
    ),
    ("deepseek_r1", None, "<think>\nHmm.</think>Four.", "\nHmm.", "Four."),
    ("deepseek_r1", None, "Still thinking when cut", "Still thinking when cut", ""),
    ("deepseek_r1", False, "No thinking here.", "", "No thinking here."),
    ("qwen3", None, "<think>\nA < B, so.\n</think>\n\nB.", "\nA < B, so.\n", "B."),
    (
        "qwen3",
        None,
        "Direct answer with </think> inside? no: <think> later.",
        "",
        "Direct answer with </think> inside? no: <think> later.",
    ),
    ("qwen3", True, "opened in the prompt</think>Answer", "opened in the prompt", "Answer"),
    ("qwen3", None, "  \n<think></think>\n\nEmpty thought.", "", "Empty thought."),
    ("mistral", None, "[THINK]draft[/THINK]Final.", "draft", "Final."),
    ("gemma4", None, "<|channel>thought\nplan<channel|>Answer.", "\nplan", "Answer."),
    (
        "gpt_oss",
        None,
        (
            "<|channel|>analysis<|message|>User asks. Simple.<|end|><|start|>assistant"
            "<|channel|>final<|message|>Hello!<|return|>"
        ),
        "User asks. Simple.",
        "Hello!",
    ),
    (
        "gpt_oss",
        None,
        (
            "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant"
            '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}'
            "<|call|>"
        ),
        "Need weather.",
        (
            "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
            '{"city":"Paris"}<|call|>'
        ),
    ),
    ("gpt_oss", None, "plain text, not harmony", "", "plain text, not harmony"),
]


def _stream(
    fmt: str, inside: bool | None, pieces: list[str]
) -> tuple[str, str, list[ReasoningDelta]]:
    parser = make_reasoning_parser(fmt, starts_in_reasoning=inside)
    deltas = [parser.feed(p) for p in pieces] + [parser.finish()]
    return "".join(d.reasoning for d in deltas), "".join(d.content for d in deltas), deltas


@pytest.mark.parametrize(("fmt", "inside", "text", "reasoning", "content"), CASES)
def test_split_whole_and_streamed(
    fmt: str, inside: bool | None, text: str, reasoning: str, content: str
) -> None:
    assert _stream(fmt, inside, [text])[:2] == (reasoning, content)
    assert _stream(fmt, inside, list(text))[:2] == (reasoning, content)
    for cut in range(1, len(text)):
        assert _stream(fmt, inside, [text[:cut], text[cut:]])[:2] == (reasoning, content), cut
    rng = random.Random(7)
    for _ in range(5):
        pieces, at = [], 0
        while at < len(text):
            size = rng.randint(1, 6)
            pieces.append(text[at : at + size])
            at += size
        assert _stream(fmt, inside, pieces)[:2] == (reasoning, content)


@pytest.mark.parametrize(("fmt", "inside", "text", "reasoning", "content"), CASES)
def test_markers_never_leak(
    fmt: str, inside: bool | None, text: str, reasoning: str, content: str
) -> None:
    fmt_obj = get_reasoning_format(fmt)
    _, _, deltas = _stream(fmt, inside, list(text))
    for delta in deltas:
        assert fmt_obj.end_marker not in delta.reasoning
        assert "<|channel|>" not in delta.reasoning and "<|end|>" not in delta.reasoning


def test_in_reasoning_tracks_the_state() -> None:
    parser = make_reasoning_parser("deepseek_r1")
    assert parser.in_reasoning
    parser.feed("thinking </thi")
    assert parser.in_reasoning
    parser.feed("nk> done")
    assert not parser.in_reasoning
    harmony = make_reasoning_parser("gpt_oss")
    harmony.feed("<|channel|>analysis<|message|>x")
    assert harmony.in_reasoning
    harmony.feed("<|end|><|start|>assistant<|channel|>final<|message|>y")
    assert not harmony.in_reasoning


def test_budget_markers_end_the_thinking() -> None:
    # Inserting end_marker (what the engine does when the budget is spent) ends the reasoning.
    for name, fmt in REASONING_FORMATS.items():
        parser = fmt.make_parser(starts_in_reasoning=True)
        lead = fmt.start_marker if name == "gpt_oss" else ""
        parser.feed(lead + "thinking")
        assert parser.in_reasoning, name
        out = parser.feed(fmt.end_marker + "answer")
        out2 = parser.finish()
        assert (out.content + out2.content) == "answer", name
        assert not parser.in_reasoning, name


def test_prompt_opens_reasoning() -> None:
    r1 = get_reasoning_format("deepseek_r1")
    assert r1.prompt_opens_reasoning("<｜Assistant｜><think>\n")
    assert not r1.prompt_opens_reasoning("<think>\n\n</think>\n\n")
    assert not r1.prompt_opens_reasoning("no marker")
    harmony = get_reasoning_format("gpt_oss")
    assert harmony.prompt_opens_reasoning("<|start|>assistant<|channel|>analysis<|message|>")
    assert not harmony.prompt_opens_reasoning("<|start|>assistant")


def test_gpt_oss_reasoning_then_tool_parser_gives_the_call() -> None:
    text = CASES[11][2]
    reasoning = make_reasoning_parser("gpt_oss")
    tools = make_tool_parser("gpt_oss")
    calls, content, thought = [], "", ""
    for ch in text:
        part = reasoning.feed(ch)
        thought += part.reasoning
        delta = tools.feed(part.content)
        content += delta.content
        calls += delta.tool_calls
    part = reasoning.finish()
    delta = tools.feed(part.content)
    delta.extend(tools.finish())
    content += delta.content
    calls += delta.tool_calls
    assert thought == "Need weather." and content == ""
    assert [c.name for c in calls if c.name] == ["get_weather"]
    assert "".join(c.arguments or "" for c in calls) == '{"city": "Paris"}'


def test_unknown_reasoning_parser_lists_valid_names() -> None:
    with pytest.raises(UnknownParserError) as err:
        get_reasoning_format("r2")
    assert (
        "deepseek_r1" in str(err.value)
        and "qwen3" in str(err.value)
        and "gpt_oss" in str(err.value)
    )


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_response_parser_chains_reasoning_then_tools(chunk: int) -> None:
    from mlx_textgen.parsers import make_response_parser

    text = (
        "<think>\nI should call it.\n</think>\n\nSure.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    parser = make_response_parser(tool_parser="qwen3", reasoning_parser="qwen3")
    deltas = [parser.feed(text[i : i + chunk]) for i in range(0, len(text), chunk)]
    deltas.append(parser.finish())
    assert "".join(d.reasoning for d in deltas) == "\nI should call it.\n"
    assert "".join(d.content for d in deltas) == "Sure."
    pieces = [p for d in deltas for p in d.tool_calls]
    assert [p.name for p in pieces if p.name] == ["get_weather"]
    assert "".join(p.arguments or "" for p in pieces) == '{"city": "Paris"}'
    plain = make_response_parser()
    assert plain.feed("<think>x</think>").content == "<think>x</think>"
    assert not plain.in_reasoning and not plain.finish()
