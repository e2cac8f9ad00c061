"""Small text scanners shared by the streaming parsers: marker search, held-back prefixes,
and the end of a bracketed JSON or Python value."""

from __future__ import annotations

import json
from typing import Any

_OPEN = {"{": "}", "[": "]", "(": ")"}


def find_first(text: str, markers: tuple[str, ...], start: int = 0) -> tuple[int, str] | None:
    """The earliest ``(index, marker)`` of any of ``markers`` in ``text``, longest on a tie."""
    best: tuple[int, str] | None = None
    for marker in markers:
        at = text.find(marker, start)
        if at >= 0 and (
            best is None or at < best[0] or (at == best[0] and len(marker) > len(best[1]))
        ):
            best = (at, marker)
    return best


def held_suffix_len(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that could be the start of one of ``markers``."""
    longest = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), longest, -1):
            if marker.startswith(text[len(text) - size :]):
                longest = size
                break
    return longest


def bracket_end(text: str, start: int, quotes: str = '"') -> int | None:
    """Index just past the bracketed value opening at ``text[start]``, or None if incomplete.

    Strings delimited by any character of ``quotes`` (with backslash escapes) are skipped, so
    brackets inside them do not count. A mismatched closing bracket ends the scan (returns the
    position after it) so that the caller's parse reports the error.
    """
    stack: list[str] = []
    quote = ""
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch in quotes:
            quote = ch
        elif ch in _OPEN:
            stack.append(_OPEN[ch])
        elif ch in ")]}" and (not stack or stack.pop() != ch or not stack):
            return i + 1  # closed, or a mismatched bracket that the caller's parse reports
        if not stack and i == start:
            return None if ch in _OPEN else i  # not a bracket at all
    return None


def skip_ws(text: str, at: int) -> int:
    """The first index at or after ``at`` that is not whitespace."""
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def loads_object(text: str) -> dict[str, Any]:
    """``json.loads`` that insists on an object (ValueError otherwise)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")  # noqa: TRY004
    return value


def arguments_object(value: Any) -> dict[str, Any]:
    """Tool arguments as a dict: a dict as is, a JSON string decoded, None as {}."""
    if value is None:
        return {}
    if isinstance(value, str):
        return loads_object(value) if value.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("tool arguments must be an object")  # noqa: TRY004
    return value


def dump_arguments(arguments: dict[str, Any]) -> str:
    """The arguments JSON string every parser emits (same text streamed or not)."""
    return json.dumps(arguments, ensure_ascii=False)
