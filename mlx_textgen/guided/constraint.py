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
from llguidance import LLMatcher


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

    def __init__(self, matcher: LLMatcher) -> None:
        self._m = matcher

    def fill_mask(self, words: np.ndarray) -> bool:
        self._m.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        return True

    def accept(self, token: int) -> None:
        if not self._m.is_stopped():
            self._m.consume_token(token)

    def is_finished(self) -> bool:
        return self._m.is_stopped()

    def error(self) -> str | None:
        return self._m.get_error() if self._m.is_error() else None

    def fork(self) -> GrammarConstraint:
        return GrammarConstraint(self._m.deep_copy())


class AfterMarker:
    """`inner` applies only once the output has contained the token sequence `marker`
    (e.g. the end of a reasoning model's thinking); until then every token is allowed."""

    def __init__(self, inner: Constraint, marker: tuple[int, ...]) -> None:
        self.inner = inner
        self.marker = marker
        self._tail: list[int] = []
        self.active = not marker

    def fill_mask(self, words: np.ndarray) -> bool:
        return self.inner.fill_mask(words) if self.active else False

    def accept(self, token: int) -> None:
        if self.active:
            self.inner.accept(token)
            return
        self._tail = (self._tail + [token])[-len(self.marker) :]
        self.active = tuple(self._tail) == self.marker

    def is_finished(self) -> bool:
        return self.active and self.inner.is_finished()

    def error(self) -> str | None:
        return self.inner.error() if self.active else None

    def fork(self) -> AfterMarker:
        twin = AfterMarker(self.inner.fork(), self.marker)
        twin._tail, twin.active = list(self._tail), self.active
        return twin
