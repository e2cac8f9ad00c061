"""GLM 4.5/4.6/4.7 (and Laguna) calls:
``<tool_call>NAME<arg_key>k</arg_key><arg_value>v</arg_value>...</tool_call>``."""

from __future__ import annotations

import re

from .tool_base import ParsedCall, Tools
from .tool_hermes import END, START, TaggedFormat
from .values import convert_value, tool_properties

_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)
_NAME = re.compile(r"\s*([^\s<>]+)\s*")


class GlmFormat(TaggedFormat):
    """A function name, then ``<arg_key>``/``<arg_value>`` pairs, inside ``<tool_call>`` tags."""

    name = "glm4"
    markers = (START,)
    start_marker = START
    end_marker = END

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        body = self.tagged_body(region)
        head = _NAME.match(body)
        if head is None:
            raise ValueError("no function name")
        name, rest = head.group(1), body[head.end() :]
        if _ARG.sub("", rest).strip():
            raise ValueError("text that is not an <arg_key>/<arg_value> pair")
        props = tool_properties(tools, name)
        args = {
            m.group(1).strip(): convert_value(m.group(2), props.get(m.group(1).strip()))
            for m in _ARG.finditer(rest)
        }
        return [(name, args)]
