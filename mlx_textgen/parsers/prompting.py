"""Tools for templates that cannot render them: a Hermes-style system instruction.

The model is told to answer with ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
so the ``hermes`` parser (and grammar) read its answer.
"""

from __future__ import annotations

import json
from typing import Any

HERMES_PARSER = "hermes"

_INTRO = (
    "You are a function calling AI model. You may call one or more of the functions below to "
    "help with the user's request. Do not make up argument values that the user did not give."
)
_HOW = (
    "To call a function, reply with a JSON object holding its name and its arguments inside "
    "<tool_call></tool_call> tags, one block per call, like this:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <arguments-json-object>}\n</tool_call>\n'
    "If no function fits, answer the user directly without tags."
)


def tool_system_prompt(tools: list[dict[str, Any]]) -> str:
    """The instruction listing each function's name, description and parameters schema."""
    listed = []
    for tool in tools:
        function = tool.get("function", tool)
        entry = {
            "name": function["name"],
            "description": function.get("description", ""),
            "parameters": function.get("parameters") or {"type": "object", "properties": {}},
        }
        listed.append(json.dumps(entry, ensure_ascii=False))
    return f"{_INTRO}\n\nFunctions:\n<tools>\n" + "\n".join(listed) + f"\n</tools>\n\n{_HOW}"


def add_tool_prompt(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A copy of ``messages`` with the tool instruction put first in the system message (or a
    new system message first). Templates without a system role fold it as any system text."""
    instruction = tool_system_prompt(tools)
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        existing = _text(out[0].get("content"))
        out[0]["content"] = f"{instruction}\n\n{existing}" if existing else instruction
        return out
    return [{"role": "system", "content": instruction}, *out]


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # OpenAI content parts: keep the text parts.
    return "\n".join(
        p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
    )


def hermes_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool history as plain turns, for templates that know neither ``tool_calls`` nor the
    ``tool`` role: calls become ``<tool_call>`` text in the assistant turn, results become user
    turns in ``<tool_response>`` tags (merged with a neighbouring user turn, so roles alternate)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            parts = [_text(message.get("content"))] if message.get("content") else []
            parts += [_call_text(call) for call in message["tool_calls"]]
            out.append({"role": "assistant", "content": "\n".join(parts)})
        elif role == "tool":
            body = f"<tool_response>\n{_text(message.get('content'))}\n</tool_response>"
            _append_user(out, body)
        elif role == "user":
            _append_user(out, _text(message.get("content")), message)
        else:
            out.append(dict(message))
    return out


def _call_text(call: dict[str, Any]) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # shown as the client sent it
    payload = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


def _append_user(
    out: list[dict[str, Any]], text: str, original: dict[str, Any] | None = None
) -> None:
    if out and out[-1].get("role") == "user" and isinstance(out[-1].get("content"), str):
        out[-1] = {**out[-1], "content": f"{out[-1]['content']}\n\n{text}"}
    elif original is not None and not isinstance(original.get("content"), str):
        out.append(dict(original))  # content parts (images...): leave them as they are
    else:
        out.append({"role": "user", "content": text})
