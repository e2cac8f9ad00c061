"""Where a chat prompt's reusable prefixes end: the boundaries the prompt cache keeps.

Two boundaries, in token positions of the rendered prompt:

- the system prompt: the longest prefix that is the same whatever the first question is.
  It is found by rendering the leading system messages followed by two probe questions
  that differ from their first character on, and taking the tokens the prompt shares with
  both. This does not depend on how a template places the system text: in its own turn
  (ChatML, Llama 3: the boundary then includes the next user turn's header), or folded
  into the first user turn by templates without a system role (Gemma: the boundary is the
  end of the system text inside that turn, plus the separator before the question).
  Rendering the system messages alone does not work there: Gemma's own template renders
  nothing but ``<bos>`` for a conversation without a user turn.
- the previous turn: the prompt without its last message, as the template renders it.

A cache that can't be cut to any prefix (sliding-window or state layers) can only resume
where prefill stopped and stored its state, so these positions are where it stops.

Pure Python: ``encode`` (messages, is_final) -> token ids does the rendering.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Encode = Callable[[list[dict[str, Any]], bool], list[int]]

# Two questions that differ in their first character, so that no template or tokenizer
# can give them a token in common after the system prompt's.
_PROBES = ("Alpha probe question one?", "Zulu probe question two?")


def message_boundaries(
    messages: list[dict[str, Any]], ids: Sequence[int], encode: Encode
) -> tuple[int, ...]:
    """Ascending positions in ``ids`` (the whole conversation's prompt) where the system
    prompt and the turns before the last message end; each leaves tokens after it."""
    found: set[int] = set()
    lead = _leading_system(messages)
    if lead:
        found.add(system_boundary(messages[:lead], ids, encode))
    if len(messages) - 1 > lead:
        found.add(_shared_with(messages[:-1], ids, encode))
    return tuple(sorted(b for b in found if 0 < b < len(ids)))


def system_boundary(system: list[dict[str, Any]], ids: Sequence[int], encode: Encode) -> int:
    """Tokens of ``ids`` that every question after the ``system`` messages would share."""
    shared = [_shared_with([*system, {"role": "user", "content": p}], ids, encode) for p in _PROBES]
    if all(shared):
        return min(shared)
    return _shared_with(system, ids, encode)  # a template that refused the probes


def _leading_system(messages: list[dict[str, Any]]) -> int:
    n = 0
    while n < len(messages) and messages[n].get("role") == "system":
        n += 1
    return n


def _shared_with(prefix: list[dict[str, Any]], ids: Sequence[int], encode: Encode) -> int:
    """How many leading tokens of ``ids`` the rendered ``prefix`` conversation has too."""
    try:
        other = encode(prefix, False)
    except Exception:  # noqa: BLE001 - a template may refuse a partial conversation
        return 0
    n = 0
    for a, b in zip(other, ids):
        if a != b:
            break
        n += 1
    return n
