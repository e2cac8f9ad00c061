"""Typed argument values for the XML-ish formats (Qwen3-Coder, GLM, MiniMax), which write each
argument as text: the tool's JSON schema says which JSON value the text stands for."""

from __future__ import annotations

import json
from typing import Any

Tools = list[dict[str, Any]]


def tool_properties(tools: Tools | None, name: str) -> dict[str, Any]:
    """The ``parameters.properties`` of tool ``name`` (empty when unknown)."""
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") == name:
            params = function.get("parameters") or {}
            props = params.get("properties") if isinstance(params, dict) else None
            return props if isinstance(props, dict) else {}
    return {}


def schema_types(schema: Any) -> set[str]:
    """The JSON types a property schema allows (``type``, type lists, enums, any/oneOf)."""
    if not isinstance(schema, dict):
        return set()
    types: set[str] = set()
    declared = schema.get("type")
    if isinstance(declared, str):
        types.add(declared)
    elif isinstance(declared, list):
        types.update(t for t in declared if isinstance(t, str))
    for value in schema.get("enum") or []:
        types.add(_json_type(value))
    if "const" in schema:
        types.add(_json_type(schema["const"]))
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            types |= schema_types(sub)
    return types


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def convert_value(text: str, schema: Any) -> Any:
    """The JSON value the argument ``text`` stands for under ``schema``.

    Declared strings stay text; other declared types are decoded as JSON when the decoded value
    has an allowed type. Without a schema (unknown tool or property) the text stays a string.
    """
    types = schema_types(schema)
    if not types or types == {"string"}:
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = _loose(text)
    kind = _json_type(value)
    if kind in types or (kind == "integer" and "number" in types):
        return value
    if kind == "number" and "integer" in types and float(value).is_integer():
        return int(value)
    return text


def _loose(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return text
