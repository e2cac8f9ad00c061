"""gpt-oss (harmony) tool calls: a message whose header names ``to=functions.NAME``::

    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>
    {"city": "Paris"}<|call|>

Other message headers and end tokens are markup and are dropped; message bodies are content
(the ``gpt_oss`` reasoning parser, run first, has already taken the analysis channel out).
"""

from __future__ import annotations

import re

from .scan import Scans, find_first, loads_object, skip_ws
from .tool_base import Markup, ParsedCall, ToolFormat, Tools

MESSAGE, CALL = "<|message|>", "<|call|>"
HEADER_STARTS = ("<|start|>", "<|channel|>")
MESSAGE_ENDS = ("<|end|>", "<|return|>", CALL)
_RECIPIENT = re.compile(r"\bto=functions\.([^\s<]+)")


class GptOssFormat(ToolFormat):
    """Harmony messages; those addressed to ``functions.NAME`` are calls with JSON arguments."""

    name = "gpt_oss"
    markers = HEADER_STARTS + MESSAGE_ENDS
    start_marker = "to=functions."  # the header's recipient; what the lazy grammar waits for

    def region_end(self, region: str, scans: Scans) -> int | None:
        if region.startswith(MESSAGE_ENDS):
            return len(next(m for m in MESSAGE_ENDS if region.startswith(m)))
        header_end = region.find(MESSAGE)
        if header_end < 0:
            return None
        header_end += len(MESSAGE)
        if not _RECIPIENT.search(region[:header_end]):
            return header_end
        hit = find_first(region, MESSAGE_ENDS + HEADER_STARTS, header_end)
        return None if hit is None else hit[0] + (len(hit[1]) if hit[1] in MESSAGE_ENDS else 0)

    def stream_head(self, region: str) -> tuple[str, int] | None:
        header_end = region.find(MESSAGE)
        recipient = _RECIPIENT.search(region[: max(header_end, 0)])
        if recipient is None:
            return None
        start = skip_ws(region, header_end + len(MESSAGE))
        return (recipient.group(1), start) if start < len(region) else None

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        header_end = region.find(MESSAGE)
        recipient = _RECIPIENT.search(region[: max(header_end, 0)])
        if header_end < 0 or recipient is None:
            if header_end < 0 and not region.startswith(MESSAGE_ENDS):
                raise ValueError("unterminated harmony header")
            raise Markup()
        body = region[header_end + len(MESSAGE) :]
        end = find_first(body, MESSAGE_ENDS)
        body = body[: end[0]] if end else body
        return [(recipient.group(1), loads_object(body))]
