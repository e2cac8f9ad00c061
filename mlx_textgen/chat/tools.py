"""OpenAI-shaped tool history -> what chat templates expect.

Clients send assistant turns with ``tool_calls`` (``content`` "" or null, ``arguments`` a JSON
string) and ``tool`` turns that name only a ``tool_call_id``. Templates differ: most iterate
``arguments`` as a mapping, some want the tool's ``name`` on the tool turn, Mistral's insist on
9-character alphanumeric call ids. ``prepare_tool_history`` gives them all of that, and is
deterministic so that the next turn of a conversation renders the same prefix (cache hits).
"""

from __future__ import annotations

import hashlib
import json
import string
from typing import Any

_ALNUM = string.ascii_letters + string.digits


def prepare_tool_history(
    messages: list[dict[str, Any]],
    chat_template: str | None = None,
    *,
    dict_arguments: bool | None = None,
    empty_content: str | None = "",
) -> list[dict[str, Any]]:
    """A copy of ``messages`` ready for a chat template.

    - ``tool_calls[].function.arguments``: decoded to a dict (``dict_arguments=True``; text that
      is not a JSON object is left as sent), encoded to a JSON string (False), or as sent (None:
      ``render_chat`` then tries both shapes);
    - the ``content`` of an assistant turn with calls, when "" or null, becomes
      ``empty_content`` (Qwen3's templates need "", DeepSeek-R1's test for null);
    - each ``tool`` turn gets the ``name`` of the call it answers, when it lacks one;
    - call ids become 9-character alphanumeric ids when the template demands them (Mistral).
    """
    short_ids = bool(chat_template) and ("[CALL_ID]" in chat_template or "!= 9" in chat_template)
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        message = dict(message)
        if message.get("role") == "assistant" and message.get("tool_calls"):
            if not message.get("content"):
                message["content"] = empty_content
            message["tool_calls"] = [
                _prepare_call(call, names, short_ids, dict_arguments)
                for call in message["tool_calls"]
            ]
        elif message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            if not message.get("name") and call_id in names:
                message["name"] = names[call_id]
            if short_ids and isinstance(call_id, str):
                message["tool_call_id"] = short_call_id(call_id)
            message["content"] = _text(message.get("content"))
        out.append(message)
    return out


def history_variants(
    messages: list[dict[str, Any]], chat_template: str | None = None
) -> list[list[dict[str, Any]]]:
    """Prepared histories to try in order: empty call content as null (DeepSeek's templates
    drop the calls of a turn whose content is ""), then as "" (Qwen3's fail on null)."""
    first = prepare_tool_history(messages, chat_template, empty_content=None)
    second = prepare_tool_history(messages, chat_template, empty_content="")
    return [first] if first == second else [first, second]


def prepare_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """OpenAI ``tools`` as templates read them: every function has a ``description`` and an
    object ``parameters`` schema with ``properties`` (tools without them are valid requests)."""
    if tools is None:
        return None
    out = []
    for tool in tools:
        function = dict(tool.get("function") or {})
        function.setdefault("description", "")
        params = dict(function.get("parameters") or {})
        params.setdefault("type", "object")
        params.setdefault("properties", {})
        function["parameters"] = params
        out.append({**tool, "type": tool.get("type", "function"), "function": function})
    return out


def render_with_tools(
    messages: list[dict[str, Any]],
    *,
    chat_template: str | None,
    tools: list[dict[str, Any]] | None,
    **kwargs: Any,
) -> str:
    """``render_chat`` of an OpenAI tool conversation: tools and history prepared, and the
    history variants tried in order until the template renders one."""
    from .templates import ChatTemplateError, render_chat

    first_error: ChatTemplateError | None = None
    for variant in history_variants(messages, chat_template):
        try:
            return render_chat(
                variant, chat_template=chat_template, tools=prepare_tools(tools), **kwargs
            )
        except ChatTemplateError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def short_call_id(call_id: str) -> str:
    """A stable 9-character alphanumeric id for ``call_id`` (Mistral's templates need them)."""
    if len(call_id) == 9 and call_id.isalnum():
        return call_id
    digest = hashlib.sha256(call_id.encode("utf-8")).digest()
    return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:9])


def _prepare_call(
    call: dict[str, Any], names: dict[str, str], short_ids: bool, dict_arguments: bool
) -> dict[str, Any]:
    call = dict(call)
    function = dict(call.get("function") or {})
    if isinstance(call.get("id"), str) and isinstance(function.get("name"), str):
        names[call["id"]] = function["name"]
    arguments = function.get("arguments")
    if dict_arguments and isinstance(arguments, str):
        function["arguments"] = _decode(arguments)
    elif not dict_arguments and isinstance(arguments, dict):
        function["arguments"] = json.dumps(arguments, ensure_ascii=False)
    call["function"] = function
    call.setdefault("type", "function")
    if short_ids and isinstance(call.get("id"), str):
        call["id"] = short_call_id(call["id"])
    return call


def _decode(arguments: str) -> Any:
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
    return value if isinstance(value, dict) else arguments


def _text(content: Any) -> Any:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else content
