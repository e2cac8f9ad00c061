"""Building blocks for tool-call grammars (llguidance's Lark dialect): literals, schema
tightening, and the rule set one grammar accumulates."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

# Compact JSON: no whitespace between tokens, so the model cannot pad a call.
COMPACT_JSON = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


class ToolGrammarError(ValueError):
    """The tools or tool_choice cannot make a grammar (unknown tool, no tools, no grammar)."""


@dataclass(frozen=True)
class ToolGrammar:
    """A Lark grammar and, for ``auto``, the ``trigger`` text after which it applies.

    ``trigger`` is None when the grammar applies from the first generated token. When
    ``trigger_at_start_only`` the trigger counts only at the start of the output (Llama's ``{``,
    a pythonic ``[``).
    """

    grammar: str
    trigger: str | None = None
    trigger_at_start_only: bool = False


def tighten_schema(schema: Any) -> Any:
    """A copy of ``schema`` where every object that lists ``properties`` and says nothing of
    ``additionalProperties`` (or says false) gets ``additionalProperties: false``."""
    schema = copy.deepcopy(schema)
    _tighten(schema)
    return schema


def _tighten(node: Any) -> None:
    if not isinstance(node, dict):
        return
    if isinstance(node.get("properties"), dict) and node.get("additionalProperties") is None:
        node["additionalProperties"] = False
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            for sub in node[key].values():
                _tighten(sub)
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for sub in node[key]:
                _tighten(sub)
    for key in ("items", "additionalProperties", "not", "if", "then", "else"):
        _tighten(node.get(key))


def arguments_schema(function: dict[str, Any]) -> dict[str, Any]:
    """The schema a call's arguments must match: ``strict`` tools as given, others tightened;
    a tool without parameters (or without properties) takes only ``{}`` unless it says
    ``additionalProperties`` is allowed."""
    params = function.get("parameters")
    if not isinstance(params, dict) or not params:
        return {"type": "object", "properties": {}, "additionalProperties": False}
    params = dict(params)
    if "properties" not in params and params.get("additionalProperties") in (None, False):
        params["properties"] = {}
    params.setdefault("type", "object")
    return copy.deepcopy(params) if function.get("strict") else tighten_schema(params)


def functions_of(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The ``function`` objects of OpenAI ``tools`` (a bare function dict is accepted too)."""
    out = []
    for tool in tools or []:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ToolGrammarError("each tool needs a function with a name")
        out.append(function)
    return out


class RuleSet:
    """Rules accumulated while one grammar is built; ``lit``/``json``/``text`` return the
    Lark expression to use inside a rule."""

    def __init__(self, special_tokens: set[str] | None = None) -> None:
        self.special = special_tokens or set()
        self.rules: list[str] = []
        self._count = 0
        self._has_text = False

    def lit(self, *texts: str) -> str:
        """A literal; markers that are special tokens become token references."""
        parts = [t for t in texts if t]
        return " ".join(
            t
            if t in self.special and t.startswith("<") and t.endswith(">")
            else json.dumps(t, ensure_ascii=False)
            for t in parts
        )

    def json(self, schema: Any) -> str:
        """A rule matching compact JSON valid against ``schema``."""
        self._count += 1
        name = f"json_{self._count}"
        body = dict(schema) if isinstance(schema, dict) else {}
        body["x-guidance"] = {**COMPACT_JSON, **(body.get("x-guidance") or {})}
        self.rules.append(f"{name}: %json {json.dumps(body, ensure_ascii=False)}")
        return name

    def text(self) -> str:
        """Free text for a string value in an XML-ish format (no ``<`` in it)."""
        if not self._has_text:
            self.rules.append("TEXT_VALUE: /[^<]*/")
            self._has_text = True
        return "TEXT_VALUE"

    def rule(self, body: str) -> str:
        """A named rule for ``body``."""
        self._count += 1
        name = f"r_{self._count}"
        self.rules.append(f"{name}: {body}")
        return name

    def render(self, start: str) -> str:
        """The whole grammar with ``start`` as its start rule."""
        return "%llguidance {}\n" + f"start: {start}\n" + "\n".join(self.rules) + "\n"
