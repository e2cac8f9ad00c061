"""The per-sequence constraint interface the engine drives, and its two kinds.

Per step: `fill_mask(words)` writes the allowed next tokens as a bitmask, `accept(token)`
advances by the sampled token, `is_finished()` says the constraint is complete. `fork()`
gives an independent copy at the same state (n > 1 forks a prompt's sequences). The
engine never knows which kind it holds; a constraint that switches on at a marker (after
a reasoning model's thinking, or at a tool-call marker) wraps another one. No MLX here.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from llguidance import LLMatcher, LLTokenizer


class Constraint(Protocol):
    def fill_mask(self, words: np.ndarray) -> bool:
        """Write the allowed next tokens into `words` (int32, bit i of word i // 32 for
        token i); False when nothing is constrained at this step (`words` untouched)."""
        ...

    def accept(self, token: int) -> None: ...

    def is_finished(self) -> bool: ...

    def error(self) -> str | None: ...

    def fork(self) -> Constraint: ...



def mask_words(vocab_size: int) -> np.ndarray:
    """A bitmask buffer for a vocabulary of `vocab_size` tokens."""
    return np.zeros((vocab_size + 31) // 32, dtype=np.int32)


class GrammarConstraint:
    """An llguidance matcher: from the first generated token to the grammar's end."""

    def __init__(self, matcher: LLMatcher, vocab_size: int) -> None:
        self._m = matcher
        self._vocab_size = vocab_size  # the tokenizer's (llguidance's mask is this long)
        self._words = (vocab_size + 31) // 32

    def fill_mask(self, words: np.ndarray) -> bool:
        # A model's logits often outnumber its tokenizer's tokens (padded embeddings, as in
        # Qwen2.5): those extra ids are never allowed under a constraint.
        n = self._words
        if len(words) >= n:
            words[n:] = 0
            self._m.unsafe_compute_mask_ptr(words.ctypes.data, n * 4)
        else:
            full = np.zeros(n, dtype=np.int32)
            self._m.unsafe_compute_mask_ptr(full.ctypes.data, full.nbytes)
            words[:] = full[: len(words)]
        return True

    def accept(self, token: int) -> None:
        if not self._m.is_stopped():
            self._m.consume_token(token)

    def is_finished(self) -> bool:
        return self._m.is_stopped()

    def error(self) -> str | None:
        return self._m.get_error() if self._m.is_error() else None

    def fork(self) -> GrammarConstraint:
        return GrammarConstraint(self._m.deep_copy(), self._vocab_size)



class Triggered:
    """`inner` applies once the output contains the text `trigger`; until then every token
    is allowed (a lazy grammar: a tool call's start marker in `auto` mode, the end of a
    reasoning model's thinking). With `include`, the grammar matches the trigger itself and
    what follows it; without, what follows it. The text is matched as bytes, so a trigger
    split across tokens, or sharing a token with the text around it, is found all the same;
    the grammar is then fed the trigger's part of those bytes, re-tokenized.

    If that text doesn't fit the grammar, the constraint stays off for the rest of the
    output (the caller then sees plain text, as if nothing had been constrained)."""

    def __init__(
        self, inner: Constraint, trigger: str, include: bool, tokenizer: LLTokenizer,
        at_start: bool = False,
    ) -> None:
        self.inner = inner
        self.at_start = at_start  # the trigger counts only at the output's start (Llama's `{`)
        self.trigger = trigger.encode()
        self.include = include
        self._tokenizer = tokenizer
        self._text = b""
        self.active = False
        self.failed = False

    def fill_mask(self, words: np.ndarray) -> bool:
        return self.inner.fill_mask(words) if self.active else False

    def accept(self, token: int) -> None:
        if self.active:
            self.inner.accept(token)
            return
        if self.failed:
            return
        self._text += self._tokenizer.decode_bytes([token])
        at = self._start_of_trigger() if self.at_start else self._text.find(self.trigger)
        if at is None:
            return
        if at < 0:
            self._text = self._text[-(len(self.trigger) - 1) :] if len(self.trigger) > 1 else b""
            return
        tail = self._text[at:] if self.include else self._text[at + len(self.trigger) :]
        for t in self._tokenizer.tokenize_bytes(tail) if tail else ():
            self.inner.accept(t)
        if self.inner.error() is not None:
            self.failed = True  # the model wrote what no grammar of ours allows: leave it be
        else:
            self.active = True

    def _start_of_trigger(self) -> int | None:
        """Where the trigger starts if the output (after whitespace) begins with it; None
        while that can't be told yet. Anything else at the start: the output stays free."""
        lead = self._text.lstrip()
        if lead.startswith(self.trigger):
            return len(self._text) - len(lead)
        if not lead or self.trigger.startswith(lead):
            return None
        self.failed = True
        return None

    def is_finished(self) -> bool:
        return self.active and self.inner.is_finished()

    def error(self) -> str | None:
        return self.inner.error() if self.active else None

    def fork(self) -> Triggered:
        twin = Triggered(
            self.inner.fork(), self.trigger.decode(), self.include, self._tokenizer, self.at_start
        )
        twin._text, twin.active, twin.failed = self._text, self.active, self.failed
        return twin

