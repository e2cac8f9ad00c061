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


class BracketScanner:
    """Finds the end of the bracketed value opening at ``start``, resuming where it stopped
    as the text grows (a streamed region is rescanned only for its new characters).

    Strings delimited by any character of ``quotes`` (with backslash escapes) are skipped, so
    brackets inside them do not count. A mismatched closing bracket ends the scan (the position
    after it) so that the caller's parse reports the error.
    """

    def __init__(self, start: int, quotes: str = '"') -> None:
        self.start, self.quotes = start, quotes
        self._pos = start
        self._stack: list[str] = []
        self._quote = ""
        self._escaped = False
        self._end: int | None = None

    def scan(self, text: str) -> int | None:
        """Index just past the value in ``text`` (which extends earlier texts), or None."""
        if self._end is not None or self._pos >= len(text):
            return self._end
        if self._pos == self.start and text[self.start] not in _OPEN:
            self._end = self.start  # not a bracket at all
            return self._end
        for i in range(self._pos, len(text)):
            if self._step(text[i]):
                self._end = i + 1
                return self._end
        self._pos = len(text)
        return None

    def _step(self, ch: str) -> bool:
        if self._quote:
            if self._escaped:
                self._escaped = False
            elif ch == "\\":
                self._escaped = True
            elif ch == self._quote:
                self._quote = ""
            return False
        if ch in self.quotes:
            self._quote = ch
        elif ch in _OPEN:
            self._stack.append(_OPEN[ch])
        elif ch in ")]}":
            return not self._stack or self._stack.pop() != ch or not self._stack
        return False


class Scans:
    """The bracket scanners of one region, keyed by where their value starts."""

    def __init__(self) -> None:
        self._scanners: dict[tuple[int, str], BracketScanner] = {}

    def bracket_end(self, text: str, start: int, quotes: str = '"') -> int | None:
        """``bracket_end`` for a text that only grows between calls."""
        scanner = self._scanners.get((start, quotes))
        if scanner is None:
            scanner = self._scanners[(start, quotes)] = BracketScanner(start, quotes)
        return scanner.scan(text)


def bracket_end(text: str, start: int, quotes: str = '"') -> int | None:
    """Index just past the bracketed value opening at ``text[start]``, or None if incomplete."""
    return BracketScanner(start, quotes).scan(text)


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
