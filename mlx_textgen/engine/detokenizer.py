"""Incremental detokenization that works with any tokenizer that can decode a list of ids.

Decoding each token alone breaks multi-byte characters and SentencePiece's leading spaces,
so each step decodes a short window before the new tokens and emits the difference; a
trailing replacement character means an unfinished UTF-8 sequence and is held back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]

_WINDOW = 6  # tokens of left context kept for decoding the next piece


class IncrementalDetokenizer:
    """Feed token ids one at a time; get back the new text each one completes."""

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the context window
        self._read_offset = 0  # tokens up to here have been emitted as text

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if full.endswith("\ufffd") or len(full) <= len(prefix) and not full.startswith(prefix):
            return ""
        new_text = full.removeprefix(prefix)
        self._read_offset = len(self._ids)
        self._prefix_offset = max(0, self._read_offset - _WINDOW)
        return new_text

    def flush(self) -> str:
        """Text still held back at the end (an incomplete character decodes as U+FFFD)."""
        if self._read_offset == len(self._ids):
            return ""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        self._read_offset = len(self._ids)
        return full.removeprefix(prefix)
