"""Run a set of choices through the engine and render them, collected or streamed (SSE).

Both endpoints share this; each supplies a Renderer for its own JSON shapes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from fastapi import Request as HTTPRequest

from mlx_textgen.api.errors import APIError, ClientGone, internal_error
from mlx_textgen.engine.request import (
    FinishReason,
    Request,
    RequestOutput,
    SamplingParams,
    TokenLogprob,
)

log = logging.getLogger("mlx_textgen.api")


@dataclass
class ChoiceState:
    """What one choice has produced so far."""

    index: int
    prompt: int  # which prompt the choice belongs to
    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_note: str = ""
    parser: Any = None  # a chat choice's ChoiceParser (reasoning, content, tool calls), if any

    @property
    def reasoning_tokens(self) -> int:
        return self.parser.reasoning_tokens if self.parser is not None else 0


class Renderer(Protocol):
    object_name: str
    chunk_object: str

    def choice(self, c: ChoiceState) -> dict[str, Any]: ...
    def chunk_choice(self, c: ChoiceState, out: RequestOutput, first: bool) -> dict[str, Any] | None: ...


@dataclass
class Job:
    """One HTTP request's worth of choices: prompts x n."""

    model: str
    prompts: list[list[int]]
    n: int
    params: SamplingParams
    boundaries: list[tuple[int, ...]] = field(default_factory=list)  # per prompt, for the prompt cache
    response_id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.monotonic)
    new_parser: Callable[[int], Any] | None = None  # (prompt index) -> a choice's parser, or None

    def requests(self) -> list[Request]:
        return [
            Request(
                f"{self.response_id}-{i * self.n + j}", p, self._choice_params(j), self.model,
                group=f"{self.response_id}-p{i}",
                boundaries=self.boundaries[i] if self.boundaries else (),
            )
            for i, p in enumerate(self.prompts)
            for j in range(self.n)
        ]

    def _choice_params(self, j: int) -> SamplingParams:
        # A seeded request with n > 1 should give n different samples, reproducibly.
        if self.params.seed is None or j == 0:
            return self.params
        return replace(self.params, seed=(self.params.seed + j) % 2**64)  # a seed is 64 bits

    def states(self) -> list[ChoiceState]:
        return [
            ChoiceState(i, i // self.n, parser=self.new_parser(i // self.n) if self.new_parser else None)
            for i in range(len(self.prompts) * self.n)
        ]


def usage(states: list[ChoiceState]) -> dict[str, Any]:
    per_prompt: dict[int, tuple[int, int]] = {}
    for c in states:
        per_prompt[c.prompt] = (c.prompt_tokens, max(c.cached_tokens, per_prompt.get(c.prompt, (0, 0))[1]))
    prompt = sum(p for p, _ in per_prompt.values())
    completion = sum(c.completion_tokens for c in states)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(c for _, c in per_prompt.values())},
        "completion_tokens_details": {"reasoning_tokens": sum(c.reasoning_tokens for c in states)},
    }


def _apply(c: ChoiceState, out: RequestOutput) -> None:
    c.text.append(out.text)
    c.logprobs.extend(out.logprobs)
    c.prompt_tokens, c.completion_tokens = out.prompt_tokens, out.completion_tokens
    c.cached_tokens = out.cached_tokens
    c.cache_note = out.cache_note or c.cache_note
    if c.parser is not None:
        c.parser.feed(out)
    if out.finished:
        c.finish_reason = out.finish_reason


def _log_done(job: Job, states: list[ChoiceState], first_token: float | None, outcome: str) -> None:
    u = usage(states)
    end = time.monotonic()
    ttft = (first_token - job.started) if first_token else float("nan")
    gen_time = end - (first_token or end)
    tps = u["completion_tokens"] / gen_time if gen_time > 0 else float("nan")
    notes = sorted({c.cache_note for c in states if c.cache_note})
    log.info(
        "request %s model=%s prompt=%d completion=%d cached=%d (%s) ttft=%.3fs tok/s=%.1f %s",
        job.response_id, job.model, u["prompt_tokens"], u["completion_tokens"],
        u["prompt_tokens_details"]["cached_tokens"], "; ".join(notes) or "-", ttft, tps, outcome,
    )


def _error_of(out: RequestOutput) -> APIError | None:
    if out.finish_reason != FinishReason.ERROR:
        return None
    if out.error_status == 504:
        return APIError(504, out.error or "request timed out", code="timeout")
    if out.error_status >= 500:  # the engine's own text goes to the log only
        return internal_error(out.error or "generation failed", f"request {out.request_id} failed")
    return APIError(out.error_status, out.error or "generation failed", code="generation_error")


async def _watch_disconnect(http: HTTPRequest, on_gone: Callable[[], None]) -> None:
    while True:
        msg = await http.receive()
        if msg["type"] == "http.disconnect":
            on_gone()
            return


async def collect(
    stream: AsyncIterator[tuple[int, RequestOutput]], job: Job, http: HTTPRequest
) -> list[ChoiceState]:
    """Run to the end; a client that goes away aborts the generation at once."""
    states = job.states()
    first: float | None = None
    gen_task = asyncio.current_task()
    gone: list[bool] = []

    def on_gone() -> None:
        gone.append(True)
        gen_task.cancel()  # type: ignore[union-attr]

    watcher = asyncio.create_task(_watch_disconnect(http, on_gone))
    try:
        async for i, out in stream:
            first = first or time.monotonic()
            if (err := _error_of(out)) is not None:
                raise err
            _apply(states[i], out)
    except asyncio.CancelledError:
        _log_done(job, states, first, "client disconnected")
        if not gone or not hasattr(gen_task, "uncancel"):  # a shutdown's cancel goes on up
            raise
        gen_task.uncancel()  # our own cancel: the client left, which is no error
        raise ClientGone(job.response_id) from None
    finally:
        watcher.cancel()
        await stream.aclose()  # type: ignore[attr-defined]
    _log_done(job, states, first, "ok")
    return states


def sse(data: dict[str, Any] | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n"


async def stream_sse(
    stream: AsyncIterator[tuple[int, RequestOutput]],
    job: Job,
    renderer: Renderer,
    include_usage: bool,
    base: Callable[[], dict[str, Any]],
) -> AsyncIterator[str]:
    """SSE frames for the choices; an error after the stream began is an error event."""
    states = job.states()
    started = [False] * len(states)
    first: float | None = None
    outcome = "client disconnected"
    try:
        async for i, out in stream:
            first = first or time.monotonic()
            if (err := _error_of(out)) is not None:
                yield sse(err.body())
                outcome = "error"
                break
            _apply(states[i], out)
            choice = renderer.chunk_choice(states[i], out, not started[i])
            started[i] = True
            if choice is not None:
                chunk = base() | {"choices": [choice]}
                if include_usage:
                    chunk["usage"] = None
                yield sse(chunk)
        else:
            outcome = "ok"
            if include_usage:
                yield sse(base() | {"choices": [], "usage": usage(states)})
        yield sse("[DONE]")
    except Exception as exc:
        yield sse(internal_error(exc, f"stream of {job.response_id} failed").body())
        yield sse("[DONE]")
        outcome = "error"
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        _log_done(job, states, first, outcome)
