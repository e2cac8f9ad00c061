"""The streaming tool-call parser every format shares, and the small interface a format fills.

A format says which markers open a *region* of tool markup, where a region ends, and how a
region's text becomes calls. The parser does the rest: it streams plain text as content, holds
back anything that could still become a marker, and turns each finished region into OpenAI
tool-call deltas. A region that fails to parse is returned as content and reported.
"""

from __future__ import annotations

import enum
import json
from typing import Any, ClassVar

from .scan import Scans, bracket_end, dump_arguments, find_first, held_suffix_len, skip_ws
from .types import Delta, ParsedToolCalls, ToolCallDelta, accumulate, new_call_id

Tools = list[dict[str, Any]]
ParsedCall = tuple[str, dict[str, Any]]


class NotACall(ValueError):
    """The region is ordinary text after all (e.g. a JSON answer): content, not a malformed call."""


class Markup(Exception):
    """The region is format markup with no call in it (e.g. a message header): dropped."""


class Verdict(enum.Enum):
    """Whether text at a position-bound spot opens a region."""

    NO = 0
    MAYBE = 1
    YES = 2


class ToolFormat:
    """One model family's tool-call markup. Subclasses set the markers and implement
    ``region_end`` and ``parse_region``; grammar builders live in ``grammars``."""

    name: ClassVar[str] = ""
    # Open a region anywhere in the output.
    markers: ClassVar[tuple[str, ...]] = ()
    # Open a region only at the start of the output (leading whitespace aside).
    leading_markers: ClassVar[tuple[str, ...]] = ()
    # Open a region right after a previous region (whitespace aside).
    follow_markers: ClassVar[tuple[str, ...]] = ()
    # The text a lazy (tool_choice=auto) grammar waits for; the grammar covers what follows.
    start_marker: ClassVar[str] = ""

    def region_end(self, region: str, scans: Scans) -> int | None:
        """Where the region starting at ``region[0]`` ends (exclusive), or None if not yet."""
        raise NotImplementedError

    def region_end_at_finish(self, region: str) -> int:
        """Where an unfinished region ends when the output stops (default: all of it)."""
        return len(region)

    def parse_region(self, region: str, tools: Tools | None) -> list[ParsedCall]:
        """The calls in a finished region; ValueError (or NotACall) when it is not one."""
        raise NotImplementedError

    def stream_head(self, region: str) -> tuple[str, int] | None:
        """For a region that holds one call with JSON-object arguments: once the name is
        complete, ``(name, index of the arguments)``; None when unknown yet or not streamable."""
        return None

    def positional(self, text: str, *, at_start: bool, after_call: bool) -> Verdict:
        """Whether ``text`` (non-blank, at the start of output or after a call) opens a region."""
        candidates = (self.leading_markers if at_start else ()) + (
            self.follow_markers if after_call else ()
        )
        for marker in candidates:
            if text.startswith(marker):
                return Verdict.YES
            if marker.startswith(text):
                return Verdict.MAYBE
        return Verdict.NO


_PARSE_ERRORS = (ValueError, SyntaxError, TypeError, KeyError, IndexError, AttributeError)


class ToolCallParser:
    """Streaming parser for one response: ``feed(delta) -> Delta`` then ``finish() -> Delta``.

    By default a call is emitted once its region is complete and parsed (name delta, then the
    arguments in one fragment), so a broken call can still become content. With
    ``stream_arguments`` (for when a grammar guarantees well-formed calls) the name goes out as
    soon as it is known and the arguments stream as the model writes them, for the formats that
    support it (``ToolFormat.stream_head``); the arguments string is then the model's own JSON
    text. A call that still turns out broken is reported and returned as content, but its
    streamed deltas cannot be taken back.
    """

    def __init__(
        self, fmt: ToolFormat, tools: Tools | None = None, *, stream_arguments: bool = False
    ) -> None:
        self.format = fmt
        self.tools = tools
        self.stream_arguments = stream_arguments
        self._live: list[int] | None = None  # [call index, arguments start, chars sent]
        self._scans = Scans()  # the current region's bracket scans, resumed as it grows
        self._buf = ""
        self._pending_ws = ""
        self._ws_before_region = ""  # given back if the region turns out not to be a call
        self._in_region = False
        self._at_start = True
        self._after_call = False
        self._index = 0
        self._finished = False

    def feed(self, text: str) -> Delta:
        """Consume the next piece of model output."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._buf += text
        out = Delta()
        self._drain(out, final=False)
        return out

    def finish(self) -> Delta:
        """The output ended: flush held text; an unfinished call becomes content."""
        out = Delta()
        if not self._finished:
            self._finished = True
            self._drain(out, final=True)
            if not self._after_call:
                out.content += self._pending_ws
            self._pending_ws = ""
        return out

    @property
    def num_calls(self) -> int:
        """How many calls have been emitted so far."""
        return self._index

    def _drain(self, out: Delta, final: bool) -> None:
        while self._step_region(out, final) if self._in_region else self._step_text(out, final):
            pass

    def _step_text(self, out: Delta, final: bool) -> bool:
        if not self._buf:
            return False
        if (self._at_start or self._after_call) and not self._check_positional(out, final):
            return self._in_region
        buf = self._buf
        hit = find_first(buf, self.format.markers)
        if hit is not None:
            self._emit_text(out, buf[: hit[0]], before_region=True)
            self._buf = buf[hit[0] :]
            self._in_region = True
            return True
        keep = 0 if final else held_suffix_len(buf, self.format.markers)
        self._emit_text(out, buf[: len(buf) - keep])
        self._buf = buf[len(buf) - keep :]
        return False

    def _check_positional(self, out: Delta, final: bool) -> bool:
        """At a position-bound spot: True to go on scanning for markers, False to stop here."""
        first = skip_ws(self._buf, 0)
        if first == len(self._buf):
            if final:  # only whitespace left: dropped after a call, kept otherwise
                if not self._after_call:
                    self._emit_text(out, self._buf)
                self._buf = ""
            return False
        verdict = self.format.positional(
            self._buf[first:], at_start=self._at_start, after_call=self._after_call
        )
        if verdict is Verdict.MAYBE and not final:
            return False
        if verdict is Verdict.YES:
            self._ws_before_region = (
                "" if self._after_call else self._pending_ws + self._buf[:first]
            )
            self._buf, self._pending_ws, self._in_region = self._buf[first:], "", True
            return False
        if self._after_call:
            self._buf = self._buf[first:]  # whitespace right after a call is not content
        self._at_start = self._after_call = False
        return True

    def _emit_text(self, out: Delta, text: str, before_region: bool = False) -> None:
        # Whitespace next to tool markup is dropped, so trailing blanks wait for what follows.
        text = self._pending_ws + text
        stripped = text.rstrip()
        self._pending_ws = "" if before_region else text[len(stripped) :]
        if before_region:
            self._ws_before_region = text[len(stripped) :]
        out.content += stripped
        if stripped:
            self._at_start = self._after_call = False

    def _step_region(self, out: Delta, final: bool) -> bool:
        end = self.format.region_end(self._buf, self._scans)
        if end is None:
            if not final:
                if self.stream_arguments:
                    self._stream_live(out)
                return False
            end = self.format.region_end_at_finish(self._buf)
        region, self._buf, self._in_region = self._buf[:end], self._buf[end:], False
        live, self._live, self._scans = self._live, None, Scans()
        try:
            calls = self.format.parse_region(region, self.tools)
            if not calls:
                raise ValueError("no tool call in the region")
            self._check_names(calls)
            arguments = [dump_arguments(args) for _, args in calls]
            raw = self._raw_arguments(region, calls) if self.stream_arguments else None
        except Markup:
            return True
        except NotACall:
            self._as_content(out, region)
            return True
        except (*_PARSE_ERRORS, json.JSONDecodeError):
            out.malformed.append(region)
            self._as_content(out, region)
            return True
        if raw is not None:
            if live is None:
                live = [self._open_call(out, calls[0][0]), 0, 0]
            out.tool_calls.append(ToolCallDelta(live[0], arguments=raw[live[2] :]))
        else:
            for (name, _), args in zip(calls, arguments):
                out.tool_calls.append(ToolCallDelta(self._open_call(out, name), arguments=args))
        self._at_start, self._after_call, self._pending_ws = False, True, ""
        return True

    def _check_names(self, calls: list[ParsedCall]) -> None:
        # A call of a tool the request did not offer is not a call OpenAI would return.
        known = {f.get("name") for f in (t.get("function", t) for t in self.tools or [])}
        unknown = [name for name, _ in calls if self.tools and name not in known]
        if unknown:
            raise ValueError(f"call of a tool that was not given: {unknown[0]}")

    def _open_call(self, out: Delta, name: str) -> int:
        index, self._index = self._index, self._index + 1
        out.tool_calls.append(
            ToolCallDelta(index, id=new_call_id(), type="function", name=name, arguments="")
        )
        return index

    def _arguments_start(self, region: str) -> tuple[str, int] | None:
        head = self.format.stream_head(region)
        if head is None or not region.startswith("{", head[1]):
            return None
        return head

    def _stream_live(self, out: Delta) -> None:
        if self._live is None:
            head = self._arguments_start(self._buf)
            if head is None:
                return
            try:
                self._check_names([(head[0], {})])
            except ValueError:
                return  # not streamed: at its end the region becomes content
            self._live = [self._open_call(out, head[0]), head[1], 0]
        _, start, sent = self._live
        end = self._scans.bracket_end(self._buf, start)
        text = self._buf[start:end] if end else self._buf[start:]
        if len(text) > sent:
            out.tool_calls.append(ToolCallDelta(self._live[0], arguments=text[sent:]))
            self._live[2] = len(text)

    def _raw_arguments(self, region: str, calls: list[ParsedCall]) -> str | None:
        """The model's own arguments text, when the region streams (one call, JSON object)."""
        head = self._arguments_start(region)
        if head is None or len(calls) != 1:
            return None
        end = bracket_end(region, head[1])
        raw = region[head[1] : end] if end else ""
        if not raw or json.loads(raw) != calls[0][1]:
            raise ValueError("streamed arguments differ from the parsed call")
        return raw

    def _as_content(self, out: Delta, region: str) -> None:
        self._at_start = self._after_call = False
        self._pending_ws = self._ws_before_region
        self._emit_text(out, region)


def parse_all(
    fmt: ToolFormat, text: str, tools: Tools | None = None, *, stream_arguments: bool = False
) -> ParsedToolCalls:
    """Parse a whole response at once (the non-streaming path: same result as streaming)."""
    parser = ToolCallParser(fmt, tools, stream_arguments=stream_arguments)
    delta = parser.feed(text)
    delta.extend(parser.finish())
    return accumulate([delta])
