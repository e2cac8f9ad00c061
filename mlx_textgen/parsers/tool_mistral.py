"""Mistral ``[TOOL_CALLS]``: the old ``[TOOL_CALLS][{"name":..., "arguments":...}, ...]`` and the
newer ``[TOOL_CALLS]name[ARGS]{...}`` (optionally ``name[CALL_ID]id[ARGS]{...}``) forms."""

from __future__ import annotations

import json
import re

from .scan import Scans, arguments_object, skip_ws
from .tool_base import ParsedCall, ToolFormat, Tools, Verdict
from .tool_hermes import call_from_object

START = "[TOOL_CALLS]"
_HEADER = re.compile(r"([\w.-]+)(?:\[CALL_ID\](\w*))?\[ARGS\]")
_NAME = re.compile(r"[\w.-]+")
_ID = re.compile(r"\w*")


def _could_become_header(text: str) -> bool:
    """Whether ``text`` is a prefix of ``name[ARGS]`` or ``name[CALL_ID]id[ARGS]``."""
    name = _NAME.match(text)
    if name is None:
        return False
    rest = text[name.end() :]
    if rest.startswith("[CALL_ID]"):
        rest = rest[len("[CALL_ID]") :]
        rest = rest[_ID.match(rest).end() :]  # type: ignore[union-attr]
        return "[ARGS]".startswith(rest)
    return "[ARGS]".startswith(rest) or "[CALL_ID]".startswith(rest)


class MistralFormat(ToolFormat):
    """``[TOOL_CALLS]`` followed by a JSON list of calls or by ``name[ARGS]{arguments}``."""

    name = "mistral"
    markers = (START,)
    start_marker = START

    def positional(self, text: str, *, at_start: bool, after_call: bool) -> Verdict:
        if not after_call or text.startswith(START):
            return Verdict.NO  # a fresh [TOOL_CALLS] is found by the marker search
        if _HEADER.match(text):
            return Verdict.YES
        return Verdict.MAYBE if _could_become_header(text) else Verdict.NO

    def region_end(self, region: str, scans: Scans) -> int | None:
        at = skip_ws(region, len(START) if region.startswith(START) else 0)
        if at >= len(region):
            return None
        if region[at] in "[{":
            return scans.bracket_end(region, at)
        header = _HEADER.match(region, at)
        if header is None:
            return None if _could_become_header(region[at:]) else len(region)
        at = skip_ws(region, header.end())
        if at >= len(region):
            return None
        return scans.bracket_end(region, at) if region[at] == "{" else at

    def stream_head(self, region: str) -> tuple[str, int] | None:
        at = skip_ws(region, len(START) if region.startswith(START) else 0)
        header = _HEADER.match(region, at)
        if header is None:
            return None
        start = skip_ws(region, header.end())
        return (header.group(1), start) if start < len(region) else None

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        at = skip_ws(region, len(START) if region.startswith(START) else 0)
        if region[at] in "[{":
            payload = json.loads(region[at:])
            items = payload if isinstance(payload, list) else [payload]
            if not items or not all(isinstance(item, dict) for item in items):
                raise ValueError("[TOOL_CALLS] payload is not a list of calls")
            return [call_from_object(item) for item in items]
        header = _HEADER.match(region, at)
        if header is None:
            raise ValueError("no name[ARGS] after [TOOL_CALLS]")
        return [(header.group(1), arguments_object(region[header.end() :].strip()))]
