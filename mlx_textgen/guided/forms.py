"""A request's constraint fields -> one llguidance grammar.

Every spelling clients send is accepted: OpenAI's `response_format`; the original
MLX-Textgen's (and old vLLM's) `guided_json`, `guided_regex`, `guided_choice`,
`guided_grammar`, `guided_whitespace_pattern`; vLLM's `structured_outputs`; llama.cpp's
`json_schema` and `grammar`. At most one constraint per request. No MLX here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llguidance import LLMatcher
from llguidance.gbnf_to_lark import any_to_lark

from mlx_textgen.guided.compiler import ConstraintError

# The fields that can carry a constraint, in the order they are reported.
CONSTRAINT_FIELDS = (
    "response_format", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
    "structured_outputs", "json_schema", "grammar",
)
_STRUCTURED_KINDS = ("json", "json_object", "regex", "choice", "grammar")
_STRUCTURED_OPTIONS = ("whitespace_pattern", "disable_any_whitespace")


@dataclass(frozen=True)
class Constraint:
    """A compiled-to-be grammar, and where in the request it came from."""

    grammar: str  # llguidance's grammar JSON: the compile cache's key
    param: str  # the request field, for error messages
    kind: str  # json | regex | choice | grammar


@dataclass(frozen=True)
class JsonStyle:
    """How JSON is laid out: compact by default (`,` and `:` with no whitespace, as
    OpenAI's structured outputs read), or between tokens a whitespace `pattern`."""

    flexible: bool = False
    pattern: str | None = None

    def options(self) -> dict[str, Any]:
        # oneOf is approximated by anyOf: llguidance refuses oneOf over $ref branches
        # otherwise, and clients (pydantic discriminated unions) send exactly that.
        opts: dict[str, Any] = {"coerce_one_of": True}
        if self.pattern is not None:
            opts["whitespace_pattern"] = self.pattern
        else:
            opts["whitespace_flexible"] = self.flexible
        return opts


def from_request(fields: dict[str, Any], style: JsonStyle) -> Constraint | None:
    """The request's one constraint (None: unconstrained). `fields` maps the names in
    CONSTRAINT_FIELDS (and `guided_whitespace_pattern`) to their values, None if absent."""
    given = [name for name in CONSTRAINT_FIELDS if _present(name, fields.get(name))]
    if len(given) > 1:
        both = " and ".join(f"`{n}`" for n in given)
        raise ConstraintError(f"{both} both set a constraint; use one of them", given[1])
    pattern = fields.get("guided_whitespace_pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise ConstraintError("must be a string (a regex)", "guided_whitespace_pattern")
        style = JsonStyle(pattern=pattern)
    if not given:
        return None
    name = given[0]
    value = fields[name]
    if name == "response_format":
        return _response_format(value, style)
    if name == "structured_outputs":
        return _structured(value, style)
    if name in ("guided_json", "json_schema"):
        return json_constraint(_schema(value, name), name, style)
    if name == "guided_regex":
        return regex_constraint(value, name)
    if name == "guided_choice":
        return choice_constraint(value, name)
    return grammar_constraint(value, name)  # guided_grammar, grammar


def _present(name: str, value: Any) -> bool:
    if value is None:
        return False
    return not (name == "response_format" and isinstance(value, dict) and value.get("type") == "text")


def json_constraint(schema: dict[str, Any], param: str, style: JsonStyle) -> Constraint:
    try:
        grammar = LLMatcher.grammar_from_json_schema(schema, defaults=style.options())
    except (ValueError, TypeError) as exc:
        raise ConstraintError(f"invalid JSON schema: {exc}", param) from None
    return Constraint(grammar, param, "json")


def regex_constraint(regex: Any, param: str) -> Constraint:
    if not isinstance(regex, str) or not regex:
        raise ConstraintError("must be a non-empty string (a regular expression)", param)
    return Constraint(LLMatcher.grammar_from_regex(regex), param, "regex")


def choice_constraint(choices: Any, param: str) -> Constraint:
    """Exactly one of the strings, matched literally ("C++" and "a.b" are plain text)."""
    if not isinstance(choices, list) or not choices:
        raise ConstraintError("must be a non-empty list of strings", param)
    if not all(isinstance(c, str) and c for c in choices):
        raise ConstraintError("every choice must be a non-empty string", param)
    lark = "start: " + " | ".join(json.dumps(c) for c in dict.fromkeys(choices))
    return Constraint(LLMatcher.grammar_from_lark(lark), param, "choice")


def grammar_constraint(text: Any, param: str) -> Constraint:
    """A Lark grammar (llguidance's dialect), or GBNF (llama.cpp's), told apart by syntax."""
    if not isinstance(text, str) or not text.strip():
        raise ConstraintError("must be a non-empty grammar (Lark or GBNF)", param)
    try:
        lark = any_to_lark(text)
    except Exception as exc:  # noqa: BLE001 - the converter raises plain errors on bad GBNF
        raise ConstraintError(f"invalid GBNF grammar: {exc}", param) from None
    return Constraint(LLMatcher.grammar_from_lark(lark), param, "grammar")


def _schema(value: Any, param: str) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConstraintError(f"is not valid JSON: {exc}", param) from None
    if not isinstance(value, dict):
        raise ConstraintError("must be a JSON schema object", param)
    return value


def _response_format(value: Any, style: JsonStyle) -> Constraint:
    param = "response_format"
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ConstraintError("must be an object with a `type`", param)
    kind = value["type"]
    if kind == "json_object":
        _only(value, {"type", "schema"}, param)
        # llama.cpp's extension: a schema next to json_object constrains to it.
        schema = _schema(value["schema"], f"{param}.schema") if "schema" in value else {"type": "object"}
        return json_constraint(schema, param, style)
    if kind == "json_schema":
        _only(value, {"type", "json_schema"}, param)
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise ConstraintError("`json_schema` must be an object", f"{param}.json_schema")
        _only(spec, {"name", "schema", "strict", "description"}, f"{param}.json_schema")
        if "name" in spec and not isinstance(spec["name"], str):
            raise ConstraintError("must be a string", f"{param}.json_schema.name")
        if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
            raise ConstraintError("must be a boolean", f"{param}.json_schema.strict")
        schema = spec.get("schema")
        schema = {"type": "object"} if schema is None else _schema(schema, f"{param}.json_schema.schema")
        return json_constraint(schema, f"{param}.json_schema.schema", style)
    raise ConstraintError(
        f"type {kind!r} is not supported; use text, json_object or json_schema", f"{param}.type"
    )


def _structured(value: Any, style: JsonStyle) -> Constraint:
    param = "structured_outputs"
    if not isinstance(value, dict):
        raise ConstraintError("must be an object", param)
    _only(value, set(_STRUCTURED_KINDS) | set(_STRUCTURED_OPTIONS), param)
    kinds = [k for k in _STRUCTURED_KINDS if value.get(k) not in (None, False)]
    if len(kinds) != 1:
        raise ConstraintError(f"needs exactly one of {', '.join(_STRUCTURED_KINDS)}", param)
    if value.get("whitespace_pattern") is not None:
        if not isinstance(value["whitespace_pattern"], str):
            raise ConstraintError("must be a string", f"{param}.whitespace_pattern")
        style = JsonStyle(pattern=value["whitespace_pattern"])
    elif value.get("disable_any_whitespace") is False:
        style = JsonStyle(flexible=True)
    kind, sub = kinds[0], f"{param}.{kinds[0]}"
    if kind == "json":
        return json_constraint(_schema(value["json"], sub), sub, style)
    if kind == "json_object":
        return json_constraint({"type": "object"}, sub, style)
    if kind == "regex":
        return regex_constraint(value["regex"], sub)
    if kind == "choice":
        return choice_constraint(value["choice"], sub)
    return grammar_constraint(value["grammar"], sub)


def _only(obj: dict[str, Any], allowed: set[str], param: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise ConstraintError(f"unknown field{'s' if len(extra) > 1 else ''}: {', '.join(extra)}", param)


def after_whitespace(grammar: str) -> str:
    """`grammar` with optional leading whitespace: for a constraint that starts after a
    marker (the end of a reasoning model's thinking), which is often followed by newlines."""
    # llguidance's grammars are its JSON form, or Lark text (from grammar_from_lark).
    top = json.loads(grammar) if grammar.lstrip().startswith("{") else {"grammars": [{"lark_grammar": grammar}]}
    inner = dict(top["grammars"][0], name="after_whitespace_inner")
    lead = {"lark_grammar": "start: WS? @after_whitespace_inner\nWS: /[ \\t\\r\\n]+/"}
    return json.dumps({**top, "grammars": [lead, inner, *top["grammars"][1:]]})
