"""Reasoning parsers: split model output into ``reasoning`` and ``content``, streamed.

``deepseek_r1``: generation starts inside the thinking (the template opens ``<think>`` in the
prompt, or the model writes it first); everything up to ``</think>`` is reasoning.
``qwen3``: ``<think>...</think>`` at the start of the output is optional.
``gpt_oss``: harmony channels (see ``reasoning_harmony``).
Each format exposes ``start_marker`` and ``end_marker``: the engine inserts ``end_marker`` to
end the thinking when a budget is spent.
"""

from __future__ import annotations

from typing import ClassVar

from .scan import held_suffix_len, skip_ws
from .types import ReasoningDelta


class ReasoningParser:
    """Streaming splitter for one response: ``feed(delta)`` then ``finish()``."""

    def feed(self, text: str) -> ReasoningDelta:
        """Consume the next piece of model output."""
        raise NotImplementedError

    def finish(self) -> ReasoningDelta:
        """The output ended: flush what was held back."""
        raise NotImplementedError

    @property
    def in_reasoning(self) -> bool:
        """Whether the text fed so far leaves the model inside its thinking."""
        raise NotImplementedError


class ReasoningFormat:
    """One family's thinking markup, and a factory for its streaming parser."""

    name: ClassVar[str] = ""
    start_marker: ClassVar[str] = ""
    end_marker: ClassVar[str] = ""

    def make_parser(self, *, starts_in_reasoning: bool | None = None) -> ReasoningParser:
        """A parser for one response; ``starts_in_reasoning`` says the prompt opened the
        thinking (None: the format's default)."""
        raise NotImplementedError

    def prompt_opens_reasoning(self, prompt: str) -> bool:
        """Whether ``prompt`` ends inside an opened, unclosed thinking block."""
        at = prompt.rfind(self.start_marker)
        return at >= 0 and prompt.find(self.end_marker, at) < 0


class _ThinkTagParser(ReasoningParser):
    """``<think>``/``</think>`` splitter; ``before`` -> ``inside`` -> ``after``."""

    def __init__(self, start: str, end: str, inside: bool) -> None:
        self._start, self._end = start, end
        self._state = "inside" if inside else "before"
        self._may_open = True  # a leading <think> is markup even when we start inside
        self._buf = ""

    @property
    def in_reasoning(self) -> bool:
        return self._state == "inside"

    def feed(self, text: str) -> ReasoningDelta:
        self._buf += text
        return self._drain(final=False)

    def finish(self) -> ReasoningDelta:
        out = self._drain(final=True)
        if self._state == "inside":
            out.reasoning += self._buf
        elif self._state == "after" and self._buf.strip() or self._state == "before":
            out.content += self._buf
        self._buf = ""
        return out

    def _drain(self, final: bool) -> ReasoningDelta:
        out = ReasoningDelta()
        while self._step(out, final):
            pass
        return out

    def _step(self, out: ReasoningDelta, final: bool) -> bool:
        if self._may_open:
            first = skip_ws(self._buf, 0)
            rest = self._buf[first:]
            if not final and (not rest or (self._start.startswith(rest) and rest != self._start)):
                return False  # could still be the opening marker
            self._may_open = False
            if rest.startswith(self._start):
                self._buf, self._state = rest[len(self._start) :], "inside"
            elif self._state == "before":
                self._state = "content"
            return True
        if self._state == "inside":
            at = self._buf.find(self._end)
            if at >= 0:
                out.reasoning += self._buf[:at]
                self._buf, self._state = self._buf[at + len(self._end) :], "after"
                return True
            keep = 0 if final else held_suffix_len(self._buf, (self._end,))
            out.reasoning += self._buf[: len(self._buf) - keep]
            self._buf = self._buf[len(self._buf) - keep :]
            return False
        if self._state == "after":  # whitespace between the thinking and the answer is dropped
            first = skip_ws(self._buf, 0)
            if first == len(self._buf):
                return False
            self._buf, self._state = self._buf[first:], "content"
        out.content += self._buf
        self._buf = ""
        return False


class DeepSeekR1Format(ReasoningFormat):
    """DeepSeek-R1 (and distills): output starts inside the thinking, ends at ``</think>``."""

    name = "deepseek_r1"
    start_marker = "<think>"
    end_marker = "</think>"

    def make_parser(self, *, starts_in_reasoning: bool | None = None) -> ReasoningParser:
        inside = True if starts_in_reasoning is None else starts_in_reasoning
        return _ThinkTagParser(self.start_marker, self.end_marker, inside)


class Qwen3Format(ReasoningFormat):
    """Qwen3 (and QwQ, SmolLM3, GLM, ...): an optional leading ``<think>...</think>``."""

    name = "qwen3"
    start_marker = "<think>"
    end_marker = "</think>"

    def make_parser(self, *, starts_in_reasoning: bool | None = None) -> ReasoningParser:
        return _ThinkTagParser(self.start_marker, self.end_marker, bool(starts_in_reasoning))


class MistralFormat(ReasoningFormat):
    """Magistral / Ministral reasoning: an optional leading ``[THINK]...[/THINK]``."""

    name = "mistral"
    start_marker = "[THINK]"
    end_marker = "[/THINK]"

    def make_parser(self, *, starts_in_reasoning: bool | None = None) -> ReasoningParser:
        return _ThinkTagParser(self.start_marker, self.end_marker, bool(starts_in_reasoning))


class Gemma4Format(ReasoningFormat):
    """Gemma 4 thinking: an optional leading ``<|channel>thought ... <channel|>``."""

    name = "gemma4"
    start_marker = "<|channel>thought"
    end_marker = "<channel|>"

    def make_parser(self, *, starts_in_reasoning: bool | None = None) -> ReasoningParser:
        return _ThinkTagParser(self.start_marker, self.end_marker, bool(starts_in_reasoning))
