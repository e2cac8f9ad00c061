"""Chat template rendering: messages -> prompt text.

Templates are Jinja, rendered in a sandbox configured the way Hugging Face transformers configures
it, so a model's own ``chat_template`` renders here exactly as it does there. Presets (the
``default_template`` model option) live in ``presets/*.jinja`` next to this file.

Pure Python + jinja2: this module must not import mlx, mlx_lm or transformers.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

PRESET_NAMES: tuple[str, ...] = (
    "chatml",
    "llama3",
    "gemma",
    "deepseek",
    "openchat",
    "phi",
    "mistral",
)

# The text that closes an assistant turn in each preset; None means the tokenizer's eos_token.
_PRESET_END_OF_TURN: dict[str, str | None] = {
    "chatml": "<|im_end|>",
    "llama3": "<|eot_id|>",
    "gemma": "<end_of_turn>",
    "deepseek": "<｜end▁of▁sentence｜>",
    "openchat": "<|end_of_turn|>",
    "phi": "<|end|>",
    "mistral": None,
}

# Appended to the final message for continue_final_message, so the cut point is found even when the
# same text occurs earlier in the prompt (the approach transformers takes).
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
_SYSTEM_PROBE = "SYSTEM-PROBE-7f3a: follow these instructions."


class ChatTemplateError(ValueError):
    """A chat template is missing, invalid, or refused to render the conversation."""


def load_preset(name: str) -> str:
    """Return the Jinja source of the preset template ``name`` (one of PRESET_NAMES)."""
    if name not in PRESET_NAMES:
        raise ChatTemplateError(
            f"unknown chat template preset {name!r}; choose one of {', '.join(PRESET_NAMES)}"
        )
    return resources.files(__package__).joinpath("presets", f"{name}.jinja").read_text("utf-8")


def preset_end_of_turn(name: str) -> str | None:
    """The text that ends an assistant turn in preset ``name`` (a stop word), or None for eos."""
    if name not in PRESET_NAMES:
        raise ChatTemplateError(f"unknown chat template preset {name!r}")
    return _PRESET_END_OF_TURN[name]


def render_chat(
    messages: list[dict[str, Any]],
    *,
    chat_template: str | None,
    preset: str | None = None,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    tools: list[dict[str, Any]] | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> str:
    """Render OpenAI-shaped ``messages`` into a prompt string.

    ``preset`` (a name from PRESET_NAMES) takes precedence over ``chat_template``; with neither,
    ChatTemplateError is raised. A template that has no system role gets the system text folded
    into the next user turn ("{system}\\n\\n{user}"). With ``continue_final_message`` the last
    message must be from the assistant; the prompt then ends with its content (minus any trailing
    whitespace the template trims) so that generation continues it, and no generation prompt is added.
    Tool-call arguments are handed to the template as objects (the transformers convention); a
    template that only copes with the OpenAI JSON-string form is retried with that form.
    """
    source = load_preset(preset) if preset else chat_template
    if not source:
        raise ChatTemplateError("no chat template: the model has none and no preset was chosen")
    template = _compile(source)
    # template_kwargs may come from a request (chat_template_kwargs): they never replace our keys.
    context = {k: v for k, v in (template_kwargs or {}).items() if k != "messages"}
    context.update(bos_token=bos_token, eos_token=eos_token)
    context.update(tools=tools, documents=None, add_generation_prompt=add_generation_prompt)
    if continue_final_message:
        _check_continuable(messages)
        context["add_generation_prompt"] = False
    candidates = _candidate_conversations(messages, source, bos_token, eos_token)
    if continue_final_message:
        candidates = [_tag_final_message(c) for c in candidates]
    text = _render_first(template, candidates, context)
    return _cut_after_final_message(text) if continue_final_message else text


def supports_system_role(chat_template: str, bos_token: str = "", eos_token: str = "") -> bool:
    """Whether ``chat_template`` renders a system message's text (it may refuse or drop it).

    Inconclusive probes (the template fails even without a system message) count as support, so
    the conversation is then rendered unchanged and the template's own error surfaces.
    """
    return _probe_system_support(chat_template, bos_token, eos_token)


# ---------------------------------------------------------------------------- environment


class _GenerationTag(jinja2.ext.Extension):
    """Accept ``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker)."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(
            lineno
        )

    def _render_body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters, which chat templates must not do.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    # Templates are untrusted code from model repositories: sandboxed, and immutable so that
    # they cannot modify the caller's messages.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(
            f"invalid chat template (line {exc.lineno}): {exc.message}"
        ) from exc


# ---------------------------------------------------------------------------- conversations


def _candidate_conversations(
    messages: list[dict[str, Any]], source: str, bos_token: str, eos_token: str
) -> list[list[dict[str, Any]]]:
    """Message lists to try, most faithful first: each argument shape, then system-folded."""
    shapes = _argument_shapes(messages)
    if not any(m.get("role") == "system" for m in messages):
        return shapes
    folded = [_fold_system_messages(s) for s in shapes]
    if _probe_system_support(source, bos_token, eos_token):
        return shapes + folded  # folding is only a fallback when the template still refuses
    return folded


def _argument_shapes(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    # transformers drops None-valued keys and most templates expect arguments as a mapping; older
    # templates (DeepSeek's) concatenate the JSON string and test `content is none` instead.
    hf_shape = [_hf_message(m) for m in messages]
    raw_shape = [dict(m) for m in messages]
    return [hf_shape] if hf_shape == raw_shape else [hf_shape, raw_shape]


def _hf_message(message: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if v is not None}
    if out.get("tool_calls"):
        out["tool_calls"] = [_hf_tool_call(call) for call in out["tool_calls"]]
    return out


def _hf_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = json.loads(function["arguments"]) if function["arguments"].strip() else {}
    except json.JSONDecodeError:
        return call  # not JSON: the template gets the text as the client sent it
    return {**call, "function": {**function, "arguments": arguments}}


def _fold_system_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge each system message into the next user message; a trailing one becomes a user turn."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []
    for message in messages:
        if message.get("role") == "system":
            pending.append(str(message.get("content") or ""))
        elif pending and message.get("role") == "user":
            out.append({**message, "content": "\n\n".join([*pending, str(message["content"])])})
            pending = []
        else:
            out.append(message)
    if pending:
        out.append({"role": "user", "content": "\n\n".join(pending)})
    return out


@lru_cache(maxsize=64)
def _probe_system_support(source: str, bos_token: str, eos_token: str) -> bool:
    template = _compile(source)
    context = {"bos_token": bos_token, "eos_token": eos_token, "add_generation_prompt": True}
    user = {"role": "user", "content": "Hello."}
    try:
        rendered = template.render(
            messages=[{"role": "system", "content": _SYSTEM_PROBE}, user], **context
        )
    except Exception:  # noqa: BLE001 - any failure of untrusted template code is an answer
        try:
            template.render(messages=[user], **context)
        except Exception:  # noqa: BLE001
            return True  # fails without a system message too: no evidence against system
        return False
    return _SYSTEM_PROBE in rendered


def _render_first(
    template: jinja2.Template, candidates: list[list[dict[str, Any]]], context: dict[str, Any]
) -> str:
    first_error: Exception | None = None
    for messages in candidates:
        try:
            return template.render(messages=messages, **context)
        except Exception as exc:  # noqa: BLE001 - template code can raise anything
            first_error = first_error or exc
    message = str(first_error) or type(first_error).__name__
    raise ChatTemplateError(f"chat template failed to render: {message}") from first_error


# ---------------------------------------------------------------------------- continuation


def _check_continuable(messages: list[dict[str, Any]]) -> None:
    if not messages or messages[-1].get("role") != "assistant":
        raise ChatTemplateError("continue_final_message needs an assistant message last")
    if not isinstance(messages[-1].get("content"), str):
        raise ChatTemplateError("continue_final_message needs the final message to have text")


def _tag_final_message(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    final = messages[-1]
    return [*messages[:-1], {**final, "content": final["content"] + _CONTINUE_TAG}]


def _cut_after_final_message(text: str) -> str:
    tag = _CONTINUE_TAG.strip()
    at = text.rfind(tag)
    if at < 0:
        raise ChatTemplateError(
            "continue_final_message: the template dropped or rewrote the final message"
        )
    if text.startswith(_CONTINUE_TAG, at):
        return text[:at]
    # The template trimmed the content's end, so it also ate trailing spaces before the tag.
    return text[:at].rstrip()
