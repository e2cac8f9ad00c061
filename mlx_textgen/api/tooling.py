"""Tools on /v1/chat/completions: check the request, choose the format, render, enforce.

A request's tools reach the prompt through the chat template when it reads ``tools``;
otherwise a Hermes-style system instruction lists them (``parsers.prompting``) and the
``hermes`` format reads the answer. ``tool_choice`` is enforced with an llguidance grammar:
from the first token (``required``, a named function) or lazily once the model writes the
format's start marker (``auto``). Pure Python: no MLX here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mlx_textgen.api.errors import bad_request
from mlx_textgen.parsers import detect_tool_parser, template_supports_tools
from mlx_textgen.parsers.grammar_core import ToolGrammar, ToolGrammarError
from mlx_textgen.parsers.grammars import tool_call_grammar
from mlx_textgen.parsers.prompting import HERMES_PARSER, add_tool_prompt, hermes_history
from mlx_textgen.parsers.registry import TOOL_FORMATS

if TYPE_CHECKING:
    from mlx_textgen.api.protocol import ChatCompletionRequest
    from mlx_textgen.models.loader import ModelInfo

log = logging.getLogger("mlx_textgen.api")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_FUNCTION_KEYS = {"name", "description", "parameters", "strict"}


@dataclass(frozen=True)
class ToolPlan:
    """What one request's tools mean for rendering, enforcing and parsing."""

    mode: str  # "auto" | "required" | "named"
    parser: str  # registry name of the tool-call format
    tools: list[dict[str, Any]]
    through_template: bool  # the template renders the tools; else the Hermes instruction
    grammar: ToolGrammar

    @property
    def forced(self) -> bool:
        return self.mode != "auto"


def template_source(info: ModelInfo) -> str | None:
    """The template text rendering uses: a configured preset's, else the model's own."""
    from mlx_textgen.chat.templates import load_preset

    preset = info.config.default_template or (None if info.chat_template else "chatml")
    return load_preset(preset) if preset else info.chat_template


def check_tools(body: ChatCompletionRequest) -> None:
    """400s for tools and tool_choice that can't be honoured, naming the field."""
    names: set[str] = set()
    for i, tool in enumerate(body.tools or []):
        where = f"tools[{i}]"
        if tool.get("type", "function") != "function":
            raise bad_request("only tools of type `function` are supported", f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad_request("a tool needs a `function` object", f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise bad_request(
                "a function name is 1 to 64 letters, digits, `_`, `-`, `.` or `:`",
                f"{where}.function.name",
            )
        if name in names:
            raise bad_request(f"two tools are named {name!r}", f"{where}.function.name")
        names.add(name)
        extra = set(function) - _FUNCTION_KEYS
        if extra:
            raise bad_request(f"unknown key {sorted(extra)[0]!r}", f"{where}.function")
        if not isinstance(function.get("parameters", {}), dict | None):
            raise bad_request("`parameters` must be a JSON schema object", f"{where}.function.parameters")
    _check_choice(body, names)


def _check_choice(body: ChatCompletionRequest, names: set[str]) -> None:
    choice = body.tool_choice
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise bad_request("tool_choice is none, auto, required or a function", "tool_choice")
        if choice == "required" and not names:
            raise bad_request("tool_choice `required` needs `tools`", "tool_choice")
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type") != "function" or not isinstance(name, str):
            raise bad_request(
                'a named tool_choice is {"type": "function", "function": {"name": ...}}', "tool_choice"
            )
        if name not in names:
            raise bad_request(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")


def mode_of(body: ChatCompletionRequest) -> str:
    """"none", "auto", "required" or "named" (no tools: "none")."""
    if not body.tools or body.tool_choice == "none":
        return "none"
    if isinstance(body.tool_choice, dict):
        return "named"
    return body.tool_choice or "auto"


@lru_cache(maxsize=16)
def _format_of(source: str | None, configured: str | None, special: frozenset[str]) -> tuple[str, bool]:
    if source and template_supports_tools(source):
        found = configured or detect_tool_parser(source, set(special))
        if found is not None:
            return found, True
        log.warning("the chat template renders tools in a format we don't know: using Hermes")
    return HERMES_PARSER, False


def special_tokens(info: ModelInfo) -> frozenset[str]:
    """The model's special and added tokens (markers that the grammar matches as tokens)."""
    hf = info.hf_tokenizer
    return frozenset(hf.all_special_tokens) | frozenset(hf.get_added_vocab())


def plan_tools(body: ChatCompletionRequest, info: ModelInfo) -> ToolPlan | None:
    """The request's ToolPlan, or None when no tool can be called (no tools, or ``none``)."""
    mode = mode_of(body)
    if mode == "none":
        return None
    source = template_source(info)
    configured = getattr(info.config, "tool_parser", None)
    parser, through = _format_of(source, configured, special_tokens(info))
    if parser not in TOOL_FORMATS:
        raise bad_request(f"the model's tool_parser {parser!r} is unknown", "tools")
    try:
        grammar = tool_call_grammar(
            parser, body.tools or [], tool_choice="auto" if mode == "auto" else (
                "required" if mode == "required" else body.tool_choice  # type: ignore[arg-type]
            ),
            parallel_tool_calls=body.parallel_tool_calls is not False,
            special_tokens=set(special_tokens(info)),
            chat_template=source,
        )
    except ToolGrammarError as exc:
        raise bad_request(str(exc), "tool_choice") from None
    return ToolPlan(mode, parser, list(body.tools or []), through, grammar)


def messages_for(
    plan: ToolPlan | None, messages: list[dict[str, Any]], info: ModelInfo
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The conversation to render and the ``tools`` to hand the template (None: none).

    Without template support, tool history becomes plain turns (calls as ``<tool_call>`` text,
    results as user turns) and the tools go into the system instruction."""
    has_history = any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
    through = plan.through_template if plan else template_supports_tools(template_source(info))
    if through:
        return messages, plan.tools if plan else None
    if has_history:
        messages = hermes_history(messages)
    if plan is not None:
        messages = add_tool_prompt(messages, plan.tools)
    return messages, None
