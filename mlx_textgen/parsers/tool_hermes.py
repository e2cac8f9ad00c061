"""Hermes / Qwen2.5 / Qwen3: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``."""

from __future__ import annotations

import json
import re

from .scan import Scans, arguments_object, loads_object
from .tool_base import ParsedCall, ToolFormat, Tools

START, END = "<tool_call>", "</tool_call>"
# `{"name": "NAME", "arguments": ` (or "parameters"), where the arguments can start streaming.
NAME_THEN_ARGS = re.compile(
    r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"(?:arguments|parameters)"\s*:\s*'
)


def name_then_args(region: str, at: int) -> tuple[str, int] | None:
    """``(name, arguments index)`` when ``region[at:]`` opens with a name then arguments."""
    match = NAME_THEN_ARGS.match(region, at)
    if match is None or match.end() >= len(region):
        return None
    return json.loads(match.group(1)), match.end()


def tagged_region_end(region: str, end_marker: str) -> int | None:
    """End of a region closed by ``end_marker`` (searched after the opening marker)."""
    at = region.find(end_marker, 1)
    return None if at < 0 else at + len(end_marker)


def call_from_object(
    obj: dict, *, args_keys: tuple[str, ...] = ("arguments", "parameters")
) -> ParsedCall:
    """``{"name": str, "arguments"|"parameters": object|JSON string}`` -> (name, arguments)."""
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("tool call without a name")
    key = next((k for k in args_keys if k in obj), None)
    return name, arguments_object(obj.get(key) if key else None)


class TaggedFormat(ToolFormat):
    """A format whose every call sits between ``start_marker`` and ``end_marker``."""

    end_marker = ""

    def region_end(self, region: str, scans: Scans) -> int | None:
        return tagged_region_end(region, self.end_marker)

    def tagged_body(self, region: str) -> str:
        """The text between the markers; a region without its end marker is no call."""
        if not region.endswith(self.end_marker):
            raise ValueError(f"unterminated {self.start_marker}")
        return region[len(self.start_marker) : -len(self.end_marker)]


class HermesFormat(TaggedFormat):
    """JSON object between ``<tool_call>`` tags; one call per tag pair."""

    name = "hermes"
    markers = (START,)
    start_marker = START
    end_marker = END

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        body = self.tagged_body(region)
        return [call_from_object(loads_object(body))]

    def stream_head(self, region: str) -> tuple[str, int] | None:
        return name_then_args(region, len(START))
