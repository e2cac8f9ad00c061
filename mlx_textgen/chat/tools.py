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
    messages: list[dict[str, Any]], chat_template: str | None = None, *, dict_arguments: bool = True
) -> list[dict[str, Any]]:
    """A copy of ``messages`` ready for a chat template.

    - ``tool_calls[].function.arguments`` decoded to a dict (``dict_arguments``; text that is not
      a JSON object is left as sent);
    - ``content: null`` on an assistant turn with calls becomes "" (templates concatenate it);
    - each ``tool`` turn gets the ``name`` of the call it answers, when it lacks one;
    - call ids become 9-character alphanumeric ids when the template demands them (Mistral).
    """
    short_ids = bool(chat_template) and ("[CALL_ID]" in chat_template or "!= 9" in chat_template)
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        message = dict(message)
        if message.get("role") == "assistant" and message.get("tool_calls"):
            if message.get("content") is None:
                message["content"] = ""
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
