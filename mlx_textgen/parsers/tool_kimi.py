"""Kimi K2 calls::

<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0<|tool_call_argument_begin|>
{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>
"""

from __future__ import annotations

import re

from .scan import Scans, loads_object
from .tool_base import ParsedCall, ToolFormat, Tools
from .tool_hermes import tagged_region_end

SECTION_START, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CALL_START, CALL_END = "<|tool_call_begin|>", "<|tool_call_end|>"
ARGS = "<|tool_call_argument_begin|>"
_CALL = re.compile(
    re.escape(CALL_START)
    + r"\s*(?:functions\.)?([^\s:<]+)(?::\d+)?\s*"
    + re.escape(ARGS)
    + r"(.*?)"
    + re.escape(CALL_END),
    re.DOTALL,
)


class KimiK2Format(ToolFormat):
    """A section of ``<|tool_call_begin|>`` calls with JSON arguments."""

    name = "kimi_k2"
    markers = (SECTION_START, CALL_START)
    start_marker = SECTION_START

    def region_end(self, region: str, scans: Scans) -> int | None:
        if region.startswith(SECTION_START):
            return tagged_region_end(region, SECTION_END)
        return tagged_region_end(region, CALL_END)

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        if region.startswith(SECTION_START):
            if not region.endswith(SECTION_END):
                raise ValueError("unterminated tool-call section")
            body = region[len(SECTION_START) : -len(SECTION_END)]
        else:
            body = region
        calls = [(m.group(1), loads_object(m.group(2))) for m in _CALL.finditer(body)]
        if not calls or _CALL.sub("", body).strip():
            raise ValueError("not a Kimi tool call")
        return calls
