"""DeepSeek V3 / R1 / V3.1 calls::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
    ```json
    {"city": "Paris"}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

V3.1 drops the type and the code fence: ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}``.
"""

from __future__ import annotations

import re

from .scan import Scans, loads_object
from .tool_base import ParsedCall, ToolFormat, Tools
from .tool_hermes import tagged_region_end

SECTION_START, SECTION_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_START, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
_CALL = re.compile(
    re.escape(CALL_START)
    + r"(?:(?:function)?"
    + re.escape(SEP)
    + r")?\s*([^\s<{`]+)\s*"
    + r"(?:"
    + re.escape(SEP)
    + r")?\s*(?:```(?:json)?\s*)?(\{.*?\})\s*(?:```)?\s*"
    + re.escape(CALL_END),
    re.DOTALL,
)


class DeepSeekV3Format(ToolFormat):
    """DeepSeek's ``<｜tool▁calls▁begin｜>`` section of calls."""

    name = "deepseek_v3"
    markers = (SECTION_START,)
    start_marker = SECTION_START

    def region_end(self, region: str, scans: Scans) -> int | None:
        return tagged_region_end(region, SECTION_END)

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        if not region.endswith(SECTION_END):
            raise ValueError("unterminated tool-call section")
        body = region[len(SECTION_START) : -len(SECTION_END)]
        calls = [(m.group(1), loads_object(m.group(2))) for m in _CALL.finditer(body)]
        if not calls or _CALL.sub("", body).strip():
            raise ValueError("not a DeepSeek tool call")
        return calls
