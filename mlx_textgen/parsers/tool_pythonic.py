"""Pythonic calls: ``[get_weather(city="Paris"), f(x=1)]`` at the start of the output (Llama 3.2
and Llama 4 pythonic templates) or between ``<|tool_call_start|>``/``<|tool_call_end|>`` (LFM2)."""

from __future__ import annotations

import ast
from typing import Any

from .scan import Scans
from .tool_base import NotACall, ParsedCall, ToolFormat, Tools
from .tool_hermes import tagged_region_end

START, END = "<|tool_call_start|>", "<|tool_call_end|>"
# Templates render nested values as JSON, so JSON's literals appear inside Python calls.
_NAMES: dict[str, Any] = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("** in a dict literal")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if not isinstance(value, (int, float)):
            raise ValueError("sign on a non-number")  # noqa: TRY004 - a parse failure
        return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f"not a literal: {ast.dump(node)[:60]}")


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise ValueError("call target is not a name")


def _call(node: ast.expr) -> ParsedCall:
    if not isinstance(node, ast.Call):
        raise ValueError("list item is not a call")  # noqa: TRY004 - a parse failure
    if node.args or any(k.arg is None for k in node.keywords):
        raise ValueError("pythonic calls take keyword arguments only")
    return _dotted(node.func), {k.arg: _literal(k.value) for k in node.keywords}  # type: ignore[misc]


def parse_pythonic(text: str) -> list[ParsedCall]:
    """``[f(a=1), g(b="x")]`` (or a bare ``f(a=1)``) -> calls; ValueError/SyntaxError if not."""
    tree = ast.parse(text.strip(), mode="eval").body
    items = tree.elts if isinstance(tree, ast.List) else [tree]
    if not items:
        raise ValueError("empty call list")
    return [_call(item) for item in items]


class PythonicFormat(ToolFormat):
    """A Python list of keyword-argument calls."""

    name = "pythonic"
    markers = (START,)
    leading_markers = ("[",)
    start_marker = "["

    def region_end(self, region: str, scans: Scans) -> int | None:
        if region.startswith(START):
            return tagged_region_end(region, END)
        return scans.bracket_end(region, 0, quotes="\"'")

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        if region.startswith(START):
            if not region.endswith(END):
                raise ValueError("unterminated <|tool_call_start|>")
            return parse_pythonic(region[len(START) : -len(END)])
        try:
            return parse_pythonic(region)
        except (ValueError, SyntaxError):
            if "(" not in region:
                raise NotACall("a bracketed answer, not calls") from None
            raise
