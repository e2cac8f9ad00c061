"""llguidance Lark grammars that enforce a valid tool call in each format.

``tool_call_grammar`` covers the three enforced ``tool_choice`` modes: ``required`` (one or more
calls from the first token; exactly one without parallel calls), a named function, and
``auto``, whose grammar is everything *after* the format's trigger text (the engine engages it
lazily once the model wrote the trigger). Arguments are compact JSON valid against the tool's
schema (``%json``); XML-ish formats write string arguments as free text without ``<``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .grammar_core import (
    RuleSet,
    ToolGrammar,
    ToolGrammarError,
    arguments_schema,
    functions_of,
    tighten_schema,
)
from .values import schema_types

Function = dict[str, Any]
FENCE, FENCE_END = "\n```json\n", "\n```"


@dataclass(frozen=True)
class Syntax:
    """How one format lays out calls. ``per_call``: each call has its own ``open``/``close``
    (auto mode then covers one call); otherwise calls share one section."""

    open_before: tuple[str, ...]  # ends with the trigger text
    trigger: str
    call: Callable[[RuleSet, Function], str]
    close: tuple[str, ...] = ()
    sep: tuple[str, ...] = ()
    open_after: tuple[str, ...] = ()
    per_call: bool = True
    at_start_only: bool = False


def _name_args(name_key: str, args_key: str) -> Callable[[RuleSet, Function], str]:
    def call(rs: RuleSet, f: Function) -> str:
        head = "{" if name_key == "{" else ""
        lead = rs.lit(f'{head}"name": {json.dumps(f["name"])}, "{args_key}": ')
        return f"{lead} {rs.json(arguments_schema(f))} {rs.lit('}')}"

    return call


def _hermes_call(rs: RuleSet, f: Function) -> str:
    return f'"\\n"? {_name_args("{", "arguments")(rs, f)} "\\n"?'


def _value(rs: RuleSet, schema: Any) -> tuple[str, bool]:
    """A Lark expression for one XML-ish argument value, and whether it is free text."""
    if schema_types(schema) == {"string"}:
        enum = schema.get("enum") if isinstance(schema, dict) else None
        if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
            return "(" + " | ".join(rs.lit(v) for v in enum) + ")", True
        return rs.text(), True
    return rs.json(tighten_schema(schema)), False


def _xml_params(rs: RuleSet, f: Function, item: Callable[[str, str, bool], str]) -> str:
    schema = arguments_schema(f)
    required = set(schema.get("required") or [])
    parts = []
    for key, prop in (schema.get("properties") or {}).items():
        value, is_text = _value(rs, prop)
        one = item(key, value, is_text)
        parts.append(one if key in required else f"({one})?")
    return " ".join(parts)


def _qwen3_coder_call(rs: RuleSet, f: Function) -> str:
    def item(key: str, value: str, is_text: bool) -> str:
        inner = value if is_text else f'"\\n" {value} "\\n"'
        return f'{rs.lit(f"<parameter={key}>")} {inner} {rs.lit("</parameter>")} "\\n"'

    params = _xml_params(rs, f, item)
    return f'"\\n" {rs.lit("<function=" + f["name"] + ">")} "\\n" {params} {rs.lit("</function>")} "\\n"'


def _glm_call(rs: RuleSet, f: Function) -> str:
    def item(key: str, value: str, is_text: bool) -> str:
        return f'{rs.lit(f"<arg_key>{key}</arg_key>")} "\\n"? {rs.lit("<arg_value>")} {value} {rs.lit("</arg_value>")} "\\n"?'

    return f'{rs.lit(f["name"])} "\\n"? {_xml_params(rs, f, item)}'


def _minimax_call(rs: RuleSet, f: Function) -> str:
    def item(key: str, value: str, is_text: bool) -> str:
        return f'{rs.lit(f"<parameter name={json.dumps(key)}>")} {value} {rs.lit("</parameter>")} "\\n"'

    name = json.dumps(f["name"])
    return f'"\\n"? {rs.lit(f"<invoke name={name}>")} "\\n" {_xml_params(rs, f, item)} {rs.lit("</invoke>")} "\\n"?'


def _pythonic_call(rs: RuleSet, f: Function) -> str:
    schema = arguments_schema(f)
    required = set(schema.get("required") or [])
    items = []
    for key, prop in (schema.get("properties") or {}).items():
        value = rs.json(tighten_schema(prop))
        items.append((f"{rs.lit(key + '=')} {value}", key in required))
    return f"{rs.lit(f['name'] + '(')} {_comma_sequence(items)} {rs.lit(')')}"


def _comma_sequence(items: list[tuple[str, bool]], sep: str = '", "') -> str:
    """Ordered items, optional ones may be left out, joined by ``sep`` (a Lark literal)."""

    def lead(i: int) -> str:
        if i == len(items):
            return ""
        expr, required = items[i]
        present = f"{expr} {tail(i + 1)}".strip()
        if required:
            return present
        rest = lead(i + 1)
        return f"(({present}) | {rest})" if rest else f"({present})?"

    def tail(i: int) -> str:
        return " ".join(f"{sep} {e}" if r else f"({sep} {e})?" for e, r in items[i:])

    return lead(0)


def _gemma_call(quote: str) -> Callable[[RuleSet, Function], str]:
    # Gemma writes strings between `quote` tokens and keys bare; other values are JSON.
    def call(rs: RuleSet, f: Function) -> str:
        schema = arguments_schema(f)
        required = set(schema.get("required") or [])
        items = []
        for key, prop in (schema.get("properties") or {}).items():
            if schema_types(prop) == {"string"}:
                value = f"{rs.lit(quote)} {rs.text()} {rs.lit(quote)}"
            else:
                value = rs.json(tighten_schema(prop))
            items.append((f"{rs.lit(key + ':')} {value}", key in required))
        body = _comma_sequence(items, rs.lit(","))
        return f"{rs.lit('call:' + f['name'] + '{')} {body} {rs.lit('}')}"

    return call


def _kimi_call(rs: RuleSet, f: Function) -> str:
    lead = f"{rs.lit('<|tool_call_begin|>', 'functions.' + f['name'] + ':')} /[0-9]+/ "
    return (
        lead
        + f"{rs.lit('<|tool_call_argument_begin|>')} {rs.json(arguments_schema(f))} {rs.lit('<|tool_call_end|>')}"
    )


def _deepseek_call(fenced: bool) -> Callable[[RuleSet, Function], str]:
    def call(rs: RuleSet, f: Function) -> str:
        args = rs.json(arguments_schema(f))
        if fenced:
            head = rs.lit("<｜tool▁call▁begin｜>", "function", "<｜tool▁sep｜>", f["name"] + FENCE)
            tail = rs.lit(FENCE_END, "<｜tool▁call▁end｜>")
        else:
            head = rs.lit("<｜tool▁call▁begin｜>", f["name"], "<｜tool▁sep｜>")
            tail = rs.lit("<｜tool▁call▁end｜>")
        return f"{head} {args} {tail}"

    return call


def _gpt_oss_call(rs: RuleSet, f: Function) -> str:
    head = rs.lit(f["name"] + " ", "<|constrain|>", "json", "<|message|>")
    return f"{head} {rs.json(arguments_schema(f))} {rs.lit('<|call|>')}"


def syntax_for(parser: str, chat_template: str | None = None) -> Syntax:
    """The grammar layout of registry format ``parser`` (the template picks a variant)."""
    t = chat_template or ""
    table: dict[str, Callable[[], Syntax]] = {
        "hermes": lambda: Syntax(
            ("<tool_call>",), "<tool_call>", _hermes_call, ("</tool_call>",), ("\n",)
        ),
        "qwen3_coder": lambda: Syntax(
            ("<tool_call>",), "<tool_call>", _qwen3_coder_call, ("</tool_call>",), ("\n",)
        ),
        "glm4": lambda: Syntax(("<tool_call>",), "<tool_call>", _glm_call, ("</tool_call>",)),
        "llama3_json": lambda: Syntax(
            ("{",), "{", _name_args("", "parameters"), sep=("; ",), at_start_only=True
        ),
        "mistral": lambda: (
            Syntax(
                ("[TOOL_CALLS]",),
                "[TOOL_CALLS]",
                _name_args("{", "arguments"),
                ("]",),
                (", ",),
                ("[",),
                per_call=False,
            )
            if "[TOOL_CALLS][" in t and "[ARGS]" not in t
            else Syntax(
                ("[TOOL_CALLS]",),
                "[TOOL_CALLS]",
                lambda rs, f: f"{rs.lit(f['name'] + '[ARGS]')} {rs.json(arguments_schema(f))}",
            )
        ),
        "pythonic": lambda: (
            Syntax(
                ("<|tool_call_start|>",),
                "<|tool_call_start|>",
                _pythonic_call,
                ("]", "<|tool_call_end|>"),
                (", ",),
                ("[",),
                per_call=False,
            )
            if "<|tool_call_start|>" in t
            else Syntax(
                ("[",), "[", _pythonic_call, ("]",), (", ",), per_call=False, at_start_only=True
            )
        ),
        "minimax_m2": lambda: Syntax(
            ("<minimax:tool_call>",),
            "<minimax:tool_call>",
            _minimax_call,
            ("</minimax:tool_call>",),
            per_call=False,
        ),
        "kimi_k2": lambda: Syntax(
            ("<|tool_calls_section_begin|>",),
            "<|tool_calls_section_begin|>",
            _kimi_call,
            ("<|tool_calls_section_end|>",),
            per_call=False,
        ),
        "deepseek_v3": lambda: Syntax(
            ("<｜tool▁calls▁begin｜>",),
            "<｜tool▁calls▁begin｜>",
            _deepseek_call("```json" in t or not t),
            ("<｜tool▁calls▁end｜>",),
            per_call=False,
        ),
        "gemma4": lambda: Syntax(
            ("<|tool_call>",), "<|tool_call>", _gemma_call('<|"|>'), ("<tool_call|>",)
        ),
        "function_gemma": lambda: Syntax(
            ("<start_function_call>",),
            "<start_function_call>",
            _gemma_call("<escape>"),
            ("<end_function_call>",),
        ),
        "gpt_oss": lambda: Syntax(
            ("<|channel|>", "commentary to=functions."),
            "to=functions.",
            _gpt_oss_call,
            sep=("<|start|>", "assistant"),
        ),
    }
    if parser not in table:
        raise ToolGrammarError(
            f"no tool-call grammar for the {parser!r} format; formats with one: {', '.join(sorted(table))}"
        )
    return table[parser]()


def _chosen(
    functions: list[Function], tool_choice: str | dict[str, Any]
) -> tuple[list[Function], str]:
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        picked = [f for f in functions if f["name"] == name]
        if not picked:
            raise ToolGrammarError(f"tool_choice names {name!r}, which is not among the tools")
        return picked, "named"
    if tool_choice not in ("auto", "required"):
        raise ToolGrammarError(
            f"tool_choice {tool_choice!r} has no grammar (auto, required or a function)"
        )
    return functions, tool_choice


def tool_call_grammar(
    parser: str,
    tools: list[dict[str, Any]],
    *,
    tool_choice: str | dict[str, Any] = "required",
    parallel_tool_calls: bool = True,
    special_tokens: set[str] | None = None,
    chat_template: str | None = None,
) -> ToolGrammar:
    """The grammar enforcing ``tool_choice`` for format ``parser`` (a registry name).

    ``special_tokens``: markers that are special tokens of the model's vocabulary, written as
    token references so the grammar matches the token, not its text.
    """
    functions = functions_of(tools)
    if not functions:
        raise ToolGrammarError("tool_choice needs at least one tool")
    functions, mode = _chosen(functions, tool_choice)
    syntax = syntax_for(parser, chat_template)
    rs = RuleSet(special_tokens)
    call = rs.rule(" | ".join(rs.rule(syntax.call(rs, f)) for f in functions))
    one = " ".join(x for x in (rs.lit(*syntax.open_after), call) if x)
    close = rs.lit(*syntax.close)
    many = parallel_tool_calls and mode != "named"
    if syntax.per_call:
        wrapped = f"{rs.lit(*syntax.open_before)} {one} {close}"
        sep = rs.lit(*syntax.sep)
        start = f"{wrapped} ({sep} {wrapped})*" if many else wrapped
        auto = f"{one} {close}"
    else:
        body = f"{one} ({rs.lit(*syntax.sep)} {call})* {close}" if many else f"{one} {close}"
        start = f"{rs.lit(*syntax.open_before)} {body}"
        auto = body
    if mode == "auto":
        return ToolGrammar(rs.render(auto), syntax.trigger, syntax.at_start_only)
    return ToolGrammar(rs.render(start))


def grammar_error(grammar: str) -> str | None:
    """llguidance's complaint about ``grammar`` (e.g. a tool schema it cannot compile), or None."""
    import llguidance  # the HTTP process may import it: it has no MLX dependency

    message = llguidance.LLMatcher.validate_grammar(grammar)
    return message or None
