"""One sequence's constraint, advanced by each of its generated tokens exactly once.

Two parties see a sequence's tokens: the decode step's mask hook (guided/rows.py), which
reads token t from the device as the input of step t+1 and must advance the constraint
before it can write the mask for token t+1, and the sequence's accounting, which sees
every token after its step (the last one included, after which no step runs). Whoever is
first advances the constraint; the other's call is a no-op.
"""

from __future__ import annotations

from mlx_textgen.guided.constraint import Constraint


class Guide:
    """A sequence's constraint and how many of its generated tokens it has accepted."""

    def __init__(self, constraint: Constraint) -> None:
        self.constraint = constraint
        self.consumed = 0  # generated tokens the constraint has accepted
        self.closed = False

    def observe(self, index: int, token: int) -> None:
        """Generated token number `index` is `token`: accepted once, in order."""
        if index == self.consumed:
            self.constraint.accept(token)
            self.consumed += 1

    def close(self) -> None:
        """The sequence is done: its mask is no longer computed."""
        self.closed = True

    @property
    def finished(self) -> bool:
        return self.constraint.is_finished()

    def error(self) -> str | None:
        return self.constraint.error()
