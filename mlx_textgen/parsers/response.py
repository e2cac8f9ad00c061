"""One parser per response: the reasoning parser first, then the tool-call parser on the
content it lets through (either may be absent)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .reasoning import ReasoningParser
from .registry import make_reasoning_parser, make_tool_parser
from .tool_base import ToolCallParser, Tools
from .types import Delta, ToolCallDelta


@dataclass
class ResponseDelta:
    """Reasoning text, content text and tool-call deltas of one step; see ``Delta``."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls or self.malformed)


class ResponseParser:
    """``feed(text_delta) -> ResponseDelta`` then ``finish() -> ResponseDelta``."""

    def __init__(
        self, reasoning: ReasoningParser | None = None, tools: ToolCallParser | None = None
    ) -> None:
        self.reasoning = reasoning
        self.tools = tools

    @property
    def in_reasoning(self) -> bool:
        """Whether the model is inside its thinking (False without a reasoning parser)."""
        return self.reasoning is not None and self.reasoning.in_reasoning

    def feed(self, text: str) -> ResponseDelta:
        """Consume the next piece of model output."""
        if self.reasoning is None:
            return self._content(ResponseDelta(), text, final=False)
        split = self.reasoning.feed(text)
        return self._content(ResponseDelta(reasoning=split.reasoning), split.content, final=False)

    def finish(self) -> ResponseDelta:
        """The output ended: flush both parsers."""
        if self.reasoning is None:
            return self._content(ResponseDelta(), "", final=True)
        split = self.reasoning.finish()
        return self._content(ResponseDelta(reasoning=split.reasoning), split.content, final=True)

    def _content(self, out: ResponseDelta, text: str, final: bool) -> ResponseDelta:
        if self.tools is None:
            out.content = text
            return out
        delta: Delta = self.tools.feed(text) if text else Delta()
        if final:
            delta.extend(self.tools.finish())
        out.content, out.tool_calls, out.malformed = (
            delta.content,
            delta.tool_calls,
            delta.malformed,
        )
        return out


def make_response_parser(
    *,
    tool_parser: str | None = None,
    reasoning_parser: str | None = None,
    tools: Tools | None = None,
    starts_in_reasoning: bool | None = None,
    stream_arguments: bool = False,
) -> ResponseParser:
    """A ``ResponseParser`` from registry names (None leaves that part out)."""
    reasoning = (
        make_reasoning_parser(reasoning_parser, starts_in_reasoning=starts_in_reasoning)
        if reasoning_parser
        else None
    )
    calls = (
        make_tool_parser(tool_parser, tools, stream_arguments=stream_arguments)
        if tool_parser
        else None
    )
    return ResponseParser(reasoning, calls)
