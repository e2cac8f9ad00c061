"""MiniMax M2 calls::

<minimax:tool_call>
<invoke name="NAME">
<parameter name="P">value</parameter>
</invoke>
</minimax:tool_call>
"""

from __future__ import annotations

import re

from .tool_base import ParsedCall, Tools
from .tool_hermes import TaggedFormat
from .tool_qwen3_coder import strip_one_newline
from .values import convert_value, tool_properties

START, END = "<minimax:tool_call>", "</minimax:tool_call>"
_INVOKE = re.compile(r"<invoke name=([\"']?)([^\"'>]+)\1\s*>(.*?)</invoke>", re.DOTALL)
_PARAMETER = re.compile(r"<parameter name=([\"']?)([^\"'>]+)\1\s*>(.*?)</parameter>", re.DOTALL)


class MiniMaxFormat(TaggedFormat):
    """``<invoke name=...>`` blocks with ``<parameter name=...>`` children."""

    name = "minimax_m2"
    markers = (START,)
    start_marker = START
    end_marker = END

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        body = self.tagged_body(region)
        calls = []
        for invoke in _INVOKE.finditer(body):
            name = invoke.group(2).strip()
            props = tool_properties(tools, name)
            args = {}
            for p in _PARAMETER.finditer(invoke.group(3)):
                key = p.group(2).strip()
                args[key] = convert_value(strip_one_newline(p.group(3).strip(" ")), props.get(key))
            calls.append((name, args))
        if not calls or _INVOKE.sub("", body).strip():
            raise ValueError("not an <invoke> call")
        return calls
