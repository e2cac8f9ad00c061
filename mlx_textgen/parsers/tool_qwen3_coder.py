"""Qwen3-Coder XML calls::

    <tool_call>
    <function=NAME>
    <parameter=P>
    value
    </parameter>
    </function>
    </tool_call>

Values are text; the tool's schema types turn them into JSON values."""

from __future__ import annotations

import re

from .tool_base import ParsedCall, Tools
from .tool_hermes import END, START, TaggedFormat
from .values import convert_value, tool_properties

_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)</function>", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)</parameter>", re.DOTALL)


def strip_one_newline(value: str) -> str:
    """Drop the single newline the format puts after an opening and before a closing tag."""
    value = value.removeprefix("\n")
    return value.removesuffix("\n")


class Qwen3CoderFormat(TaggedFormat):
    """``<function=NAME>`` with ``<parameter=P>`` children, inside ``<tool_call>`` tags."""

    name = "qwen3_coder"
    markers = (START,)
    start_marker = START
    end_marker = END

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        body = self.tagged_body(region)
        calls = []
        for function in _FUNCTION.finditer(body):
            name, inner = function.group(1), function.group(2)
            props = tool_properties(tools, name)
            args = {
                p.group(1): convert_value(strip_one_newline(p.group(2)), props.get(p.group(1)))
                for p in _PARAMETER.finditer(inner)
            }
            calls.append((name, args))
        if not calls or _FUNCTION.sub("", body).strip():
            raise ValueError("not a <function=...> call")
        return calls
