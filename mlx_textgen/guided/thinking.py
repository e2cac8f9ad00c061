"""A reasoning model's thinking as a constraint: count it, end it when its budget is spent,
then hand over to the constraint that applies to the answer (structured output, a tool call).

Phases: ``before`` (the output may still open the thinking with the start marker), ``thinking``
(tokens counted; the model's own end marker ends it), ``forcing`` (the budget is spent: the end
marker's tokens are forced one by one through the mask), ``done`` (the inner constraint, if any,
applies from here). No MLX here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llguidance import LLTokenizer

from mlx_textgen.guided.constraint import Constraint, GrammarConstraint


def _set_bit(words: np.ndarray, token: int) -> None:
    words[token // 32] |= np.int32(np.uint32(1 << (token % 32)).view(np.int32))


class ThinkingBudget:
    """See the module docstring. ``budget``: the most tokens the thinking may take, its end
    marker included (None: no limit). ``start``/``start_ids``: given when the prompt did not open
    the thinking; the model may then open it. With a grammar from the first token (``inner`` a
    GrammarConstraint) the model may only open it when the start marker is one token: its
    first token is then that token or one the grammar allows."""

    def __init__(
        self,
        inner: Constraint | None,
        tokenizer: LLTokenizer,
        *,
        end: str,
        end_ids: Sequence[int],
        budget: int | None = None,
        start: str = "",
        start_ids: Sequence[int] = (),
    ) -> None:
        self.inner = inner
        self._tok = tokenizer
        self.end, self.end_ids = end.encode(), tuple(end_ids)
        self.start, self.start_ids = start.encode(), tuple(start_ids)
        self.budget = budget
        self.count = 0  # tokens of the thinking so far
        self.forced = 0
        self._text = b""
        self._held: list[int] = []  # tokens seen before the thinking opened (or did not)
        hard = isinstance(inner, GrammarConstraint)
        if not start:
            self.phase = "thinking"
        else:
            self.phase = "done" if hard and len(self.start_ids) != 1 else "before"

    def fill_mask(self, words: np.ndarray) -> bool:
        if self.phase == "before":
            if not isinstance(self.inner, GrammarConstraint):
                return False
            self.inner.fill_mask(words)
            _set_bit(words, self.start_ids[0])
            return True
        if self.phase == "thinking" and self.budget is not None:
            if self.count + len(self.end_ids) >= self.budget:
                self.phase = "forcing"
        if self.phase == "forcing":
            words[:] = 0
            _set_bit(words, self.end_ids[self.forced])
            return True
        if self.phase == "done" and self.inner is not None:
            return self.inner.fill_mask(words)
        return False

    def accept(self, token: int) -> None:
        if self.phase == "before":
            self._before(token)
        elif self.phase == "thinking":
            self._thinking(token)
        elif self.phase == "forcing":
            self.count += 1
            self.forced += 1
            if self.forced == len(self.end_ids):
                self.phase = "done"
        elif self.inner is not None:
            self.inner.accept(token)

    def _before(self, token: int) -> None:
        self._held.append(token)
        self._text += self._tok.decode_bytes([token])
        lead = self._text.lstrip()
        if lead.startswith(self.start):
            self.phase, self._text, self._held = "thinking", lead[len(self.start) :], []
        elif not self.start.startswith(lead):
            self.phase = "done"  # the model answered without thinking
            for held in self._held if self.inner is not None else ():
                self.inner.accept(held)

    def _thinking(self, token: int) -> None:
        self.count += 1
        self._text = (self._text + self._tok.decode_bytes([token]))[-(4 * len(self.end) + 16) :]
        at = self._text.find(self.end)
        by_ids = len(self.end_ids) > 0 and self._ends_with_marker(token)
        if at < 0 and not by_ids:
            return
        self.phase = "done"
        tail = self._text[at + len(self.end) :] if at >= 0 else b""
        if self.inner is not None and tail.strip():
            for t in self._tok.tokenize_bytes(tail):
                self.inner.accept(t)

    def _ends_with_marker(self, token: int) -> bool:
        self._held = [*self._held, token][-len(self.end_ids) :]
        return tuple(self._held) == self.end_ids

    def is_finished(self) -> bool:
        return self.phase == "done" and self.inner is not None and self.inner.is_finished()

    def error(self) -> str | None:
        return self.inner.error() if self.phase == "done" and self.inner is not None else None

    def fork(self) -> ThinkingBudget:
        twin = ThinkingBudget.__new__(ThinkingBudget)
        twin.__dict__.update(self.__dict__)
        twin.inner = self.inner.fork() if self.inner is not None else None
        twin._held = list(self._held)
        return twin

