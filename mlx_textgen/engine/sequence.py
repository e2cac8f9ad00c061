"""Per-sequence state on the MLX thread: detokenizing, stop strings, logprobs, timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from typing import Any

from mlx_textgen.engine.detokenizer import IncrementalDetokenizer
from mlx_textgen.engine.request import FinishReason, Request, RequestOutput, TokenLogprob
from mlx_textgen.engine.stops import StopStringMatcher

TokenText = Callable[[int], str]


class Sequence:
    """Turns the token stream of one request into text deltas and a finish reason."""

    def __init__(
        self,
        request: Request,
        decode: Callable[[Seq[int]], str],
        stop_token_ids: frozenset[int],
        extra_stops: tuple[str, ...],
        cached_tokens: int = 0,
    ) -> None:
        self.request = request
        self.uid: int | None = None
        self.stop_token_ids = stop_token_ids
        self._detok = IncrementalDetokenizer(decode)
        self._stops = StopStringMatcher(tuple(request.params.stop) + extra_stops)
        self.num_generated = 0
        self.cached_tokens = cached_tokens
        self.stored_tokens = 0  # leading tokens committed to the prompt cache at prefill
        self.cache_note = ""  # why the prompt cache hit or missed, for the request's log line
        self.first_token_time: float | None = None
        self.finish_reason: FinishReason | None = None
        self.guide: Any = None  # guided.guide.Guide when the output is constrained

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def on_token(
        self, token: int, gen_finish: str | None, logprob: TokenLogprob | None
    ) -> RequestOutput:
        """Account for one generated token; the output says what to send and whether it ended."""
        if self.first_token_time is None:
            self.first_token_time = time.monotonic()
        self.num_generated += 1
        out = self._output()
        if gen_finish == "stop" and token in self.stop_token_ids:
            out.text = self._flush()
            out.finish_reason = self.finish_reason = FinishReason.STOP
            return out
        if self.guide is not None:
            self.guide.observe(self.num_generated - 1, token)
        out.text = self._stops.feed(self._detok.add(token))
        out.token_ids.append(token)
        if logprob is not None:
            out.logprobs.append(logprob)
        if self._stops.stopped is not None:
            out.finish_reason = FinishReason.STOP
        elif self.guide is not None and (self.guide.finished or self.guide.error()):
            return self._end_guided(out)
        elif gen_finish is not None:
            out.text += self._flush()
            out.finish_reason = FinishReason.LENGTH if gen_finish == "length" else FinishReason.STOP
        self.finish_reason = out.finish_reason
        return out

    def _end_guided(self, out: RequestOutput) -> RequestOutput:
        """The constraint is complete (a stop), or refused a token (never under its mask)."""
        out.text += self._flush()
        error = self.guide.error()
        out.finish_reason = self.finish_reason = FinishReason.ERROR if error else FinishReason.STOP
        out.error = f"constraint failed: {error}" if error else None
        return out

    def finish(
        self, reason: FinishReason, error: str | None = None, status: int = 500
    ) -> RequestOutput:
        out = self._output()
        out.finish_reason = reason
        out.error = error
        out.error_status = status
        self.finish_reason = reason
        return out

    def _flush(self) -> str:
        tail = self._stops.feed(self._detok.flush())
        return tail if self._stops.stopped else tail + self._stops.flush()

    def _output(self) -> RequestOutput:
        return RequestOutput(
            request_id=self.request_id,
            prompt_tokens=len(self.request.prompt_ids),
            completion_tokens=self.num_generated,
            cached_tokens=self.cached_tokens,
            cache_note=self.cache_note,
        )
