"""The asyncio side of one model's engine: submit requests, stream their outputs, abort them.

Nothing here calls MLX: the engine loop runs in its own process (`worker.py`); its
outputs come back on a reader thread and through `loop.call_soon_threadsafe` into one
asyncio queue per request. engine/registry.py keeps one Engine per resident model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_textgen.cache.manager import CacheOptions
from mlx_textgen.config import ModelConfig
from mlx_textgen.engine.admission import AdmissionLine
from mlx_textgen.engine.request import FinishReason, Request, RequestOutput, new_stats
from mlx_textgen.engine.worker import EngineProcess, EngineStartupError
from mlx_textgen.models.loader import ModelInfo

log = logging.getLogger("mlx_textgen.engine")

__all__ = ["Engine", "EngineOptions", "EngineStartupError", "Overloaded", "TooManyChoices"]


def fold(batch: list[tuple[int, RequestOutput]]) -> list[tuple[int, RequestOutput]]:
    """Merge the deltas of each choice that arrived together into one, in order.

    When the HTTP side keeps up, each delivery holds one token per choice and nothing
    changes; when it falls behind (many streams, a busy event loop), a choice's waiting
    tokens go out as one chunk, so the work per token shrinks exactly when it matters.
    An error or abort stays separate, so the text before it is still delivered."""
    out: list[tuple[int, RequestOutput]] = []
    open_at: dict[int, int] = {}  # choice -> position in `out` of its delta still open
    for i, o in batch:
        at = open_at.get(i)
        if o.finish_reason in (FinishReason.ERROR, FinishReason.ABORT) or at is None:
            open_at[i] = len(out)
            out.append((i, o))
        else:
            out[at][1].absorb(o)
    return out


class Overloaded(RuntimeError):
    """More requests than the server runs plus queues; the client should retry later."""


class TooManyChoices(ValueError):
    """One request asks for more sequences than the server could ever hold at once."""


@dataclass(frozen=True)
class Submission:
    """The requests of one HTTP request, whose outputs share one queue."""

    queue: asyncio.Queue[tuple[int, RequestOutput]]
    request_ids: list[str]


@dataclass(frozen=True)
class EngineOptions:
    cache_root: Path
    cpu_weights: str = "float"
    max_running_requests: int = 16
    max_queued_requests: int = 64
    request_timeout: float | None = None
    prompt_cache: CacheOptions | None = None
    blas: str = "auto"
    kv_headroom_tokens: int = 16384


class Engine:
    """Front door of one model's engine process for the HTTP layer.

    `start` (the process resolves the model and estimates its footprint) and `load` (the
    weights) block: call them off the event loop. `on_gone(engine)` runs on the event loop
    when the process exits on its own, after its requests were failed."""

    def __init__(
        self,
        config: ModelConfig,
        options: EngineOptions,
        on_gone: Callable[[Engine], None] | None = None,
    ) -> None:
        self.options = options
        self.config = config
        self.name = config.resolved_name()
        self.memory: dict[str, int] = {}  # memory_stats() as of the load
        self._on_gone = on_gone
        # request id -> (the queue of its submission, its index there)
        self._routes: dict[str, tuple[asyncio.Queue[tuple[int, RequestOutput]], int]] = {}
        self._aio: asyncio.AbstractEventLoop | None = None
        self._outbox: list[RequestOutput] = []
        self._outbox_lock = threading.Lock()
        self._wake_pending = False
        self._models: dict[str, ModelInfo] = {}
        self._stats = new_stats()  # the engine process's counters, as last sent
        self._calls: dict[int, concurrent.futures.Future] = {}
        self._call_ids = itertools.count()
        self._gone = False
        self._stopping = False
        self._line = AdmissionLine()
        loop_options = {
            "cache_root": options.cache_root,
            "cpu_weights": options.cpu_weights,
            "max_running_requests": options.max_running_requests,
            "request_timeout": options.request_timeout,
            "prompt_cache": dataclasses.asdict(options.prompt_cache)
            if options.prompt_cache
            else None,
            "kv_headroom_tokens": options.kv_headroom_tokens,
        }
        self._process = EngineProcess(config, loop_options, options.blas, self._on_message)

    @property
    def models(self) -> dict[str, ModelInfo]:
        return self._models

    @property
    def info(self) -> ModelInfo:
        return next(iter(self._models.values()))

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def exitcode(self) -> int | None:
        """The engine process's exit status once it has exited (negative: the signal)."""
        return self._process.exitcode

    def start(self) -> Any:
        """Start the engine process; returns the model's estimated Footprint once resolved
        (EngineStartupError, one line, when it can't be)."""
        return self._process.start()

    def load(self) -> None:
        """Load the weights and wait until the model is ready (EngineStartupError, one line,
        when it can't be loaded)."""
        self._models, self.memory = self._process.load()

    def attach(self, aio: asyncio.AbstractEventLoop) -> None:
        """The event loop that outputs are delivered on (the server's)."""
        self._aio = aio

    def stop(self) -> None:
        self._stopping = True
        self._process.stop()

    @property
    def stats(self) -> dict[str, float]:
        """Counters since start: tokens (prompt received, prefill computed, cached, decoded),
        decode steps, and seconds the engine spent busy, decoding, prefilling and storing
        prompt-cache entries (as of its last step or admin call)."""
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self._stats.items()}

    @property
    def alive(self) -> bool:
        """False once the engine process has exited on its own."""
        return not self._gone

    @property
    def in_flight(self) -> int:
        return len(self._routes)

    def _on_message(self, kind: str, value: Any) -> None:
        # The reader thread: one message per engine step, plus call results.
        if kind == "out":
            outs, self._stats = value
            self._emit(outs)
        elif kind == "result":
            call_id, ok, result, self._stats = value
            fut = self._calls.pop(call_id, None)
            if fut is not None and ok:
                fut.set_result(result)
            elif fut is not None:
                fut.set_exception(RuntimeError(result))
        elif kind == "gone" and not self._stopping:
            self._gone = True
            code = self._process.reap()  # the pipe closes a moment before the exit status
            log.error("the engine process of model %s exited unexpectedly (exit code %s); "
                      "its requests fail", self.name, code)  # fmt: skip
            self._fail_everything(f"the engine process of model {self.name} exited")
            if self._aio is not None and self._on_gone is not None:
                self._aio.call_soon_threadsafe(self._on_gone, self)

    def _fail_everything(self, message: str) -> None:
        for fut in list(self._calls.values()):
            fut.set_exception(RuntimeError(message))
        self._calls.clear()
        if self._aio is None:
            return
        outs = [
            RequestOutput(rid, finish_reason=FinishReason.ERROR, error=message)
            for rid in list(self._routes)
        ]
        if outs:
            self._emit(outs)

    def _emit(self, outs: list[RequestOutput]) -> None:
        # The event loop is woken only when it has taken everything handed over before,
        # so a fast engine doesn't wake it per token.
        if self._aio is None:
            return
        with self._outbox_lock:
            self._outbox.extend(outs)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._aio.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._outbox_lock:
            outs, self._outbox = self._outbox, []
            self._wake_pending = False
        for out in outs:
            target = self._routes.get(out.request_id)
            if target is not None:
                target[0].put_nowait((target[1], out))

    def submit(self, requests: list[Request], client: str | None = None) -> Submission:
        """Queue `requests` for the MLX thread; outputs of all of them arrive on one queue.
        `client` (who sent them) keeps a refused client's place: see engine/admission.py."""
        limit = self.options.max_running_requests + self.options.max_queued_requests
        if len(requests) > limit:
            raise TooManyChoices(
                f"the request asks for {len(requests)} sequences (prompts x n); this server "
                f"holds at most {limit} (--max-running-requests + --max-queued-requests)"
            )
        if not self._line.admit(client, len(requests), limit - self.in_flight):
            raise Overloaded(
                f"server is at capacity ({self.in_flight} sequences in flight, limit {limit}; "
                f"{len(self._line)} clients waiting, the longest-refused first)"
            )
        if self._gone:
            raise Overloaded("the engine process is not running")
        sub = Submission(asyncio.Queue(), [r.request_id for r in requests])
        for i, req in enumerate(requests):
            self._routes[req.request_id] = (sub.queue, i)
            self._process.send("add", req)
        return sub

    def abort(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            if self._routes.pop(rid, None) is not None:
                self._process.send("abort", rid)

    async def call(self, op: str, arg: Any = None) -> Any:
        """Run an admin operation (`worker.OPS`) on the engine's MLX thread between steps."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        call_id = next(self._call_ids)
        self._calls[call_id] = fut
        self._process.send("call", (call_id, op, arg))
        return await asyncio.wrap_future(fut)

    def open(
        self, requests: list[Request], client: str | None = None
    ) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Submit `requests` now (raising Overloaded at once) and return an iterator of
        (index, output) in arrival order. Closing it early (client gone) aborts the rest."""
        return self._iterate(self.submit(requests, client))

    async def _iterate(self, sub: Submission) -> AsyncIterator[tuple[int, RequestOutput]]:
        unfinished = len(sub.request_ids)
        try:
            while unfinished:
                batch = [await sub.queue.get()]
                while not sub.queue.empty():
                    batch.append(sub.queue.get_nowait())
                for i, out in fold(batch):
                    if out.finished:
                        unfinished -= 1
                        self._routes.pop(sub.request_ids[i], None)
                    yield i, out
        finally:
            self.abort([rid for rid in sub.request_ids if rid in self._routes])
