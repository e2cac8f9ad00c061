"""Value types the parsers hand to the API layer: streamed deltas and whole-text results."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


def new_call_id() -> str:
    """A fresh OpenAI-style tool-call id ("call_" and 24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass
class ToolCallDelta:
    """One piece of a streamed tool call, in OpenAI's ``delta.tool_calls[i]`` shape.

    The first delta of a call carries ``id``, ``type`` and ``name`` (and ``arguments=""``);
    later deltas carry only ``index`` and an ``arguments`` fragment.
    """

    index: int
    id: str | None = None
    type: str | None = None
    name: str | None = None
    arguments: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The wire form: ``{"index", "id"?, "type"?, "function": {"name"?, "arguments"?}}``."""
        out: dict[str, Any] = {"index": self.index}
        if self.id is not None:
            out["id"] = self.id
        if self.type is not None:
            out["type"] = self.type
        function: dict[str, Any] = {}
        if self.name is not None:
            function["name"] = self.name
        if self.arguments is not None:
            function["arguments"] = self.arguments
        out["function"] = function
        return out


@dataclass
class Delta:
    """What one ``feed``/``finish`` of a tool-call parser yields.

    ``malformed`` lists the raw text of calls that could not be parsed; that text is also in
    ``content`` (a broken call is never an exception), so the caller only needs to log it.
    """

    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.tool_calls or self.malformed)

    def extend(self, other: Delta) -> None:
        """Append ``other`` to this delta in place."""
        self.content += other.content
        self.tool_calls.extend(other.tool_calls)
        self.malformed.extend(other.malformed)


@dataclass
class ToolCall:
    """A complete tool call; ``arguments`` is the JSON string OpenAI sends."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        """``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict."""
        return json.loads(self.arguments)


@dataclass
class ParsedToolCalls:
    """A whole response split into ``content`` (text outside tool markup) and ``calls``."""

    content: str
    calls: list[ToolCall]
    malformed: list[str] = field(default_factory=list)


def accumulate(deltas: list[Delta]) -> ParsedToolCalls:
    """Join streamed deltas the way an OpenAI client does (by ``index``)."""
    content = ""
    calls: dict[int, ToolCall] = {}
    malformed: list[str] = []
    for delta in deltas:
        content += delta.content
        malformed.extend(delta.malformed)
        for piece in delta.tool_calls:
            call = calls.setdefault(piece.index, ToolCall(id="", name="", arguments=""))
            call.id = piece.id or call.id
            call.name += piece.name or ""
            call.arguments += piece.arguments or ""
    return ParsedToolCalls(content, [calls[i] for i in sorted(calls)], malformed)


@dataclass
class ReasoningDelta:
    """What one ``feed``/``finish`` of a reasoning parser yields: the two never mix."""

    reasoning: str = ""
    content: str = ""

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content)
