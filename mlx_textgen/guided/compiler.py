"""Grammars compiled once per (tokenizer, grammar), in whichever process needs them.

The HTTP process compiles a request's grammar to reject a bad one with a 400 before
anything is queued; the engine process compiles it off the model thread when the request
arrives, so the model thread only copies a ready matcher (microseconds). No MLX here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import llguidance

LLMatcher = llguidance.LLMatcher


class ConstraintError(ValueError):
    """A constraint that can't be compiled; `param` names the request field it came from."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def make_tokenizer(hf_tokenizer: Any, eos_ids: Iterable[int]) -> llguidance.LLTokenizer:
    """llguidance's view of a Hugging Face fast tokenizer; any of `eos_ids` ends a
    completed constraint. Takes about a second for a 50k vocabulary: build it once."""
    from llguidance.hf import from_tokenizer

    return from_tokenizer(hf_tokenizer, n_vocab=len(hf_tokenizer), eos_token=sorted(eos_ids))


class GrammarCache:
    """Compiled matchers by grammar, least recently used dropped past `capacity`.

    Thread-safe: several threads may compile at once (llguidance drops the GIL while it
    builds a grammar); each caller gets its own copy of the pristine matcher."""

    def __init__(self, tokenizer: Callable[[], llguidance.LLTokenizer], capacity: int = 256) -> None:
        self._make_tokenizer = tokenizer
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._capacity = capacity
        self._compiled: OrderedDict[str, LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._make_tokenizer()
            return self._tokenizer

    def warm(self) -> None:
        """Build the tokenizer in the background, so a first constrained request doesn't
        wait for it (about a second for a 50k vocabulary)."""
        threading.Thread(target=lambda: self.tokenizer, name="llguidance-tokenizer", daemon=True).start()

    def _pristine(self, grammar: str) -> LLMatcher:
        with self._lock:
            hit = self._compiled.get(grammar)
            if hit is not None:
                self._compiled.move_to_end(grammar)
                return hit
        matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ConstraintError(_first_line(matcher.get_error()))
        with self._lock:
            self._compiled[grammar] = matcher
            while len(self._compiled) > self._capacity:
                self._compiled.popitem(last=False)
        return matcher

    def check(self, grammar: str) -> None:
        """Compile `grammar` (or find it compiled); ConstraintError says what is wrong."""
        self._pristine(grammar)

    def matcher(self, grammar: str) -> LLMatcher:
        """A fresh matcher for `grammar`, at its start."""
        return self._pristine(grammar).deep_copy()

    def __contains__(self, grammar: str) -> bool:
        with self._lock:
            return grammar in self._compiled


def _first_line(message: str) -> str:
    """llguidance's errors can run to a rendered excerpt of the grammar; keep them short."""
    text = message.strip()
    return text if len(text) <= 500 else text[:500] + "…"
