"""The per-choice response parser the chat endpoint feeds: deltas, messages, reasoning counts."""

from __future__ import annotations

import json

from mlx_textgen.api.chat_response import ChoiceParser, ParseSpec
from mlx_textgen.engine.request import FinishReason, RequestOutput

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def outputs(pieces: list[str]) -> list[RequestOutput]:
    outs = [RequestOutput("r", text=p, token_ids=[i]) for i, p in enumerate(pieces)]
    outs[-1].finish_reason = FinishReason.STOP
    return outs


def run(spec: ParseSpec, pieces: list[str]) -> tuple[ChoiceParser, list[dict]]:
    parser, deltas = ChoiceParser(spec), []
    for out in outputs(pieces):
        parser.feed(out)
        deltas.append(parser.take())
    return parser, deltas


def test_a_call_split_across_tokens_streams_without_markup():
    spec = ParseSpec(tool_parser="hermes", tools=TOOLS)
    text = ["Sure. <tool", '_call>\n{"name": "f", ', '"arguments": {"a": 1}}\n</tool_', "call>"]
    parser, deltas = run(spec, text)
    content = "".join(d.get("content", "") for d in deltas)
    assert content == "Sure." and "<" not in content
    calls = [c for d in deltas for c in d.get("tool_calls", [])]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "f"
    message = parser.message()
    assert message["content"] == "Sure." and parser.called
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"a": 1}


def test_only_calls_means_null_content_and_a_cut_call_stays_content():
    parser, _ = run(ParseSpec(tool_parser="hermes", tools=TOOLS),
                    ['<tool_call>{"name": "f", "arguments": {}}</tool_call>'])
    assert parser.message()["content"] is None
    cut, _ = run(ParseSpec(tool_parser="hermes", tools=TOOLS, stream_arguments=True),
                 ['<tool_call>{"name": "f", "arguments": {"a": '])
    assert "tool_calls" not in cut.message() and "<tool_call>" in cut.message()["content"]


def test_reasoning_is_separate_and_counted():
    spec = ParseSpec(reasoning_parser="deepseek_r1", starts_in_reasoning=True)
    parser, deltas = run(spec, ["Let me", " see.</th", "ink>", "\n\nParis"])
    assert parser.reasoning_tokens == 3
    assert all(not ("content" in d and "reasoning_content" in d) for d in deltas)
    message = parser.message()
    assert message["reasoning_content"] == message["reasoning"] == "Let me see."
    assert message["content"] == "Paris"


def test_reasoning_inline_keeps_the_end_marker():
    spec = ParseSpec(reasoning_parser="deepseek_r1", starts_in_reasoning=True, separate_reasoning=False)
    parser, _ = run(spec, ["Hmm", "</think>", "Paris"])
    message = parser.message()
    assert message["content"] == "Hmm</think>Paris" and "reasoning_content" not in message
    assert parser.reasoning_tokens == 2


def test_a_forced_call_cut_short_stays_a_call_and_no_text():
    spec = ParseSpec(tool_parser="hermes", tools=TOOLS, stream_arguments=True, forced=True)
    pieces = ['<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n',
              '<tool_call>\n{"name": "f", "arguments": {"a": ']
    parser, deltas = run(spec, pieces)
    assert not any(d.get("content", "").strip() for d in deltas)  # streamed: no raw markup
    message = parser.message()
    assert message["content"] is None
    first, cut = message["tool_calls"]
    assert json.loads(first["function"]["arguments"]) == {"a": 1}
    assert cut["function"]["name"] == "f" and cut["function"]["arguments"].startswith('{"a":')
