"""Gemma function calls: Gemma 4's ``<|tool_call>call:NAME{k:<|"|>text<|"|>,n:5}<tool_call|>``
and FunctionGemma's ``<start_function_call>call:NAME{k:<escape>text<escape>}<end_function_call>``.
Keys are bare and strings sit between a delimiter token instead of quotes."""

from __future__ import annotations

import json
import re

from .scan import Scans, loads_object
from .tool_base import ParsedCall, ToolFormat, Tools
from .tool_hermes import tagged_region_end

_CALL = re.compile(r"\s*call:([\w.-]+)(\{.*\})\s*", re.DOTALL)
_BARE_KEY = re.compile(r"([{,]\s*)([A-Za-z_][\w.-]*)\s*:")


def gemma_args_to_json(text: str, quote: str) -> str:
    """Rewrite Gemma's argument syntax (``quote``-delimited strings, bare keys) as JSON."""
    parts = text.split(quote)
    if len(parts) % 2 == 0:
        raise ValueError("unbalanced string delimiter")
    out = []
    for i, part in enumerate(parts):
        out.append(
            json.dumps(part, ensure_ascii=False) if i % 2 else _BARE_KEY.sub(r'\1"\2":', part)
        )
    return "".join(out)


class _GemmaFormat(ToolFormat):
    end_marker = ""
    quote = ""

    def region_end(self, region: str, scans: Scans) -> int | None:
        return tagged_region_end(region, self.end_marker)

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        start = self.markers[0]
        if not region.endswith(self.end_marker):
            raise ValueError(f"unterminated {start}")
        match = _CALL.fullmatch(region[len(start) : -len(self.end_marker)])
        if match is None:
            raise ValueError("not a call:NAME{...} call")
        return [(match.group(1), loads_object(gemma_args_to_json(match.group(2), self.quote)))]


class Gemma4Format(_GemmaFormat):
    """Gemma 4 (``<|tool_call>`` ... ``<tool_call|>``, strings in ``<|"|>``)."""

    name = "gemma4"
    markers = ("<|tool_call>",)
    start_marker = "<|tool_call>"
    end_marker = "<tool_call|>"
    quote = '<|"|>'


class FunctionGemmaFormat(_GemmaFormat):
    """FunctionGemma (``<start_function_call>`` ... ``<end_function_call>``, ``<escape>``)."""

    name = "function_gemma"
    markers = ("<start_function_call>",)
    start_marker = "<start_function_call>"
    end_marker = "<end_function_call>"
    quote = "<escape>"
