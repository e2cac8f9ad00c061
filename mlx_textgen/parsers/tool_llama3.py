"""Llama 3.x JSON calls: ``{"name": ..., "parameters": {...}}``, at the start of the output or
after ``<|python_tag|>``; several may follow one another, separated by ``;``."""

from __future__ import annotations

from .scan import Scans, loads_object, skip_ws
from .tool_base import NotACall, ParsedCall, ToolFormat, Tools
from .tool_hermes import call_from_object, name_then_args

PYTHON_TAG = "<|python_tag|>"


class Llama3JsonFormat(ToolFormat):
    """A bare JSON object per call (Llama 3.1/3.2/3.3 JSON tool calling)."""

    name = "llama3_json"
    markers = (PYTHON_TAG,)
    leading_markers = ("{",)
    follow_markers = (";", "{")
    start_marker = "{"

    def region_end(self, region: str, scans: Scans) -> int | None:
        at = _body_start(region)
        if at >= len(region):
            return None
        if region[at] != "{":
            return None  # e.g. a built-in tool's python call: malformed once the output ends
        return scans.bracket_end(region, at)

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        body = region[_body_start(region) :]
        try:
            obj = loads_object(body)
        except ValueError:
            if region.startswith("{"):
                raise NotACall("not a JSON object") from None
            raise
        if "name" not in obj and region.startswith("{"):
            raise NotACall("a JSON answer, not a call")
        return [call_from_object(obj, args_keys=("parameters", "arguments"))]

    def stream_head(self, region: str) -> tuple[str, int] | None:
        return name_then_args(region, _body_start(region))


def _body_start(region: str) -> int:
    at = len(PYTHON_TAG) if region.startswith(PYTHON_TAG) else 0
    at = skip_ws(region, at)
    if region.startswith(";", at):
        at = skip_ws(region, at + 1)
    return at
