"""One chat choice's output split into reasoning, content and tool calls, streamed or whole.

The HTTP process feeds each engine delta (text and token ids) to a ``ChoiceParser``; the chat
renderer takes what it produced as an OpenAI ``delta`` (streaming) or ``message`` (at the end).
Reasoning tokens are counted here: the tokens that arrive while the model is in its thinking.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from mlx_textgen.engine.request import RequestOutput
from mlx_textgen.parsers import ResponseDelta, ResponseParser, make_response_parser
from mlx_textgen.parsers.registry import get_reasoning_format

log = logging.getLogger("mlx_textgen.api")


@dataclass(frozen=True)
class ParseSpec:
    """How a request's choices are parsed (the same for each choice)."""

    tool_parser: str | None = None
    tools: list[dict[str, Any]] | None = None
    stream_arguments: bool = False
    forced: bool = False  # tool_choice required or named: the grammar makes the output calls
    reasoning_parser: str | None = None
    starts_in_reasoning: bool = False
    separate_reasoning: bool = True  # reasoning_content; else the thinking stays in content

    @property
    def active(self) -> bool:
        return bool(self.tool_parser or self.reasoning_parser)


@dataclass
class _Calls:
    """Tool calls joined from their deltas, by index."""

    items: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, piece: dict[str, Any]) -> None:
        call = self.items.setdefault(
            piece["index"], {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        call["id"] = piece.get("id") or call["id"]
        function = piece.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""

    def list(self) -> list[dict[str, Any]]:
        return [self.items[i] for i in sorted(self.items)]


def _merge(pieces: list[dict[str, Any]], wire: dict[str, Any]) -> None:
    """Add a call delta to a chunk's list, joined with the previous piece of the same call."""
    fragment = wire["function"].get("arguments")
    if pieces and pieces[-1]["index"] == wire["index"] and set(wire) == {"index", "function"}:
        function = pieces[-1]["function"]
        function["arguments"] = function.get("arguments", "") + (fragment or "")
    elif fragment or set(wire) != {"index", "function"}:
        pieces.append(wire)


def _complete(arguments: str) -> bool:
    try:
        json.loads(arguments)
    except ValueError:
        return False
    return True


class ChoiceParser:
    """``feed(out)`` per engine delta; ``take()`` the OpenAI delta fields since the last take;
    ``message()`` the whole message; ``reasoning_tokens`` so far."""

    def __init__(self, spec: ParseSpec) -> None:
        self.spec = spec
        self.parser: ResponseParser = make_response_parser(
            tool_parser=spec.tool_parser,
            reasoning_parser=spec.reasoning_parser,
            tools=spec.tools,
            starts_in_reasoning=spec.starts_in_reasoning,
            stream_arguments=spec.stream_arguments,
        )
        fmt = get_reasoning_format(spec.reasoning_parser) if spec.reasoning_parser else None
        self._markers = (fmt.start_marker, fmt.end_marker) if fmt else ("", "")
        self._inline_open = spec.starts_in_reasoning  # inline mode: the start marker is in the prompt
        self._inline_closed = False
        self.reasoning_tokens = 0
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls = _Calls()
        self._pending: dict[str, Any] = {}

    def feed(self, out: RequestOutput) -> None:
        """Take in one engine delta (the last one flushes the parsers)."""
        was_reasoning = self.parser.in_reasoning
        delta = self.parser.feed(out.text) if out.text else ResponseDelta()
        if was_reasoning or delta.reasoning:
            self.reasoning_tokens += len(out.token_ids)
        if out.finished:
            tail = self.parser.finish()
            delta.reasoning += tail.reasoning
            delta.content += tail.content
            delta.tool_calls += tail.tool_calls
            delta.malformed += tail.malformed
        self._add(delta)

    def _add(self, delta: ResponseDelta) -> None:
        reasoning, content = delta.reasoning, delta.content
        for raw in delta.malformed:
            if self.spec.forced:  # a call cut short (max_tokens): it stays a call, not text
                content = content.replace(raw, "", 1)
            else:
                log.warning("a malformed tool call was returned as content: %.200r", raw)
        if not self.spec.separate_reasoning:
            reasoning, content = "", self._inline(delta.reasoning, content)
        if reasoning:
            self.reasoning.append(reasoning)
            self._pending["reasoning"] = self._pending.get("reasoning", "") + reasoning
        if content:
            self.content.append(content)
            self._pending["content"] = self._pending.get("content", "") + content
        for piece in delta.tool_calls:
            wire = piece.to_openai()
            self.calls.add(wire)
            _merge(self._pending.setdefault("tool_calls", []), wire)

    def _inline(self, reasoning: str, content: str) -> str:
        """The thinking as the model wrote it, markers included (use_reasoning_content off)."""
        start, end = self._markers
        text = ""
        if reasoning:
            if not self._inline_open:
                text, self._inline_open = start, True
            text += reasoning
        if content and self._inline_open and not self._inline_closed:
            text, self._inline_closed = text + end, True
        return text + content

    def take(self) -> dict[str, Any]:
        """The delta fields produced since the last call (OpenAI's ``delta`` shape)."""
        pending, self._pending = self._pending, {}
        out: dict[str, Any] = {}
        if "reasoning" in pending:
            out["reasoning_content"] = out["reasoning"] = pending["reasoning"]
        if "content" in pending:
            out["content"] = pending["content"]
        if "tool_calls" in pending:
            out["tool_calls"] = pending["tool_calls"]
        return out

    def message(self) -> dict[str, Any]:
        """The whole assistant message: content (null when only calls), reasoning, calls.
        A call cut short (max_tokens) is left out and its text is in the content, unless
        tool_choice forced calls: then it is a call with the arguments written so far, as a
        stream sent it (finish_reason "length" says it was cut)."""
        content: str | None = "".join(self.content)
        calls = [
            c for c in self.calls.list()
            if self.spec.forced or _complete(c["function"]["arguments"])
        ]
        if calls and not content.strip():
            content = None
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if self.spec.reasoning_parser and self.spec.separate_reasoning:
            reasoning = "".join(self.reasoning)
            message["reasoning_content"] = message["reasoning"] = reasoning or None
        if calls:
            message["tool_calls"] = calls
        return message

    @property
    def called(self) -> bool:
        return bool(self.calls.items)
