"""gpt-oss harmony channels as reasoning and content.

Generation starts right after ``<|start|>assistant`` with a header such as
``<|channel|>analysis<|message|>``. Bodies of ``analysis`` messages are reasoning, ``final`` (and
plain ``commentary`` preambles) are content. Messages addressed to a function
(``to=functions.NAME``) pass through verbatim, header included, for the ``gpt_oss`` tool parser.
"""

from __future__ import annotations

from .reasoning import ReasoningFormat, ReasoningParser
from .scan import find_first, held_suffix_len, skip_ws
from .types import ReasoningDelta

MESSAGE = "<|message|>"
HEADER_STARTS = ("<|start|>", "<|channel|>")
MESSAGE_ENDS = ("<|end|>", "<|return|>", "<|call|>")
_BODY_STOPS = MESSAGE_ENDS + ("<|start|>",)


class _HarmonyParser(ReasoningParser):
    def __init__(self) -> None:
        self._buf = ""
        self._in_header = True
        self._kind = "content"  # what the current body is: reasoning, content or passthrough

    @property
    def in_reasoning(self) -> bool:
        return not self._in_header and self._kind == "reasoning"

    def feed(self, text: str) -> ReasoningDelta:
        self._buf += text
        out = ReasoningDelta()
        while self._step_header(out, False) if self._in_header else self._step_body(out, False):
            pass
        return out

    def finish(self) -> ReasoningDelta:
        out = ReasoningDelta()
        while self._step_header(out, True) if self._in_header else self._step_body(out, True):
            pass
        self._emit(out, self._buf)
        self._buf = ""
        return out

    def _emit(self, out: ReasoningDelta, text: str) -> None:
        if self._kind == "reasoning":
            out.reasoning += text
        else:
            out.content += text

    def _step_header(self, out: ReasoningDelta, final: bool) -> bool:
        rest = self._buf[skip_ws(self._buf, 0) :]
        if not rest:
            return False
        if not rest.startswith(HEADER_STARTS):
            if not final and any(m.startswith(rest) for m in HEADER_STARTS):
                return False
            self._in_header, self._kind = False, "content"  # not harmony: plain content
            return True
        at = rest.find(MESSAGE)
        if at < 0:
            return False
        header, self._buf = rest[: at + len(MESSAGE)], rest[at + len(MESSAGE) :]
        self._in_header = False
        if "to=functions." in header:
            self._kind = "passthrough"
            out.content += header
        else:
            self._kind = "reasoning" if "<|channel|>analysis" in header else "content"
        return True

    def _step_body(self, out: ReasoningDelta, final: bool) -> bool:
        hit = find_first(self._buf, _BODY_STOPS)
        if hit is None:
            keep = 0 if final else held_suffix_len(self._buf, _BODY_STOPS)
            self._emit(out, self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep :]
            return False
        at, marker = hit
        self._emit(out, self._buf[:at])
        if self._kind == "passthrough" and marker in MESSAGE_ENDS:
            out.content += marker
        self._buf = self._buf[at + (len(marker) if marker in MESSAGE_ENDS else 0) :]
        self._in_header = True
        return True


class GptOssFormat(ReasoningFormat):
    """gpt-oss: the ``analysis`` channel is the thinking."""

    name = "gpt_oss"
    start_marker = "<|channel|>analysis<|message|>"
    end_marker = "<|end|><|start|>assistant<|channel|>final<|message|>"

    def make_parser(self, *, starts_in_reasoning: bool | None = None) -> ReasoningParser:
        return _HarmonyParser()

    def prompt_opens_reasoning(self, prompt: str) -> bool:
        return prompt.rstrip().endswith(self.start_marker)
