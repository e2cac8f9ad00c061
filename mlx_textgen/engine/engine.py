"""The asyncio side of the engine: submit requests, stream their outputs, abort them.

Nothing here calls MLX; outputs come back from the MLX thread through
`loop.call_soon_threadsafe` into one asyncio queue per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from mlx_textgen.config import ModelConfig
from mlx_textgen.engine.loop import EngineLoop, LoopOptions
from mlx_textgen.engine.request import Request, RequestOutput
from mlx_textgen.models.loader import ModelInfo


class Overloaded(RuntimeError):
    """More requests than the server runs plus queues; the client should retry later."""


class TooManyChoices(ValueError):
    """One request asks for more sequences than the server could ever hold at once."""


@dataclass(frozen=True)
class EngineOptions:
    cache_root: Path
    cpu_weights: str = "float"
    max_running_requests: int = 16
    max_queued_requests: int = 64
    request_timeout: float | None = None


class Engine:
    """Front door of the MLX thread for the HTTP layer."""

    def __init__(self, configs: list[ModelConfig], options: EngineOptions) -> None:
        self.options = options
        self._queues: dict[str, asyncio.Queue[RequestOutput]] = {}
        self._aio: asyncio.AbstractEventLoop | None = None
        self._loop = EngineLoop(
            configs,
            LoopOptions(
                cache_root=options.cache_root,
                cpu_weights=options.cpu_weights,
                max_running_requests=options.max_running_requests,
                request_timeout=options.request_timeout,
            ),
            self._emit,
        )

    @property
    def models(self) -> dict[str, ModelInfo]:
        return self._loop.models

    async def start(self) -> None:
        """Start the MLX thread and wait until its models are ready (or raise why not)."""
        self._aio = asyncio.get_running_loop()
        self._loop.start()
        await asyncio.to_thread(self._loop.ready.wait)
        if self._loop.startup_error is not None:
            raise self._loop.startup_error

    def stop(self) -> None:
        self._loop.stop()

    @property
    def stats(self) -> dict[str, int]:
        """Token counters since start: prompt (received), prefill (computed), cached, decode."""
        return dict(self._loop.stats)

    @property
    def in_flight(self) -> int:
        return len(self._queues)

    def _emit(self, out: RequestOutput) -> None:
        # Runs on the MLX thread.
        assert self._aio is not None
        self._aio.call_soon_threadsafe(self._deliver, out)

    def _deliver(self, out: RequestOutput) -> None:
        q = self._queues.get(out.request_id)
        if q is not None:
            q.put_nowait(out)

    def submit(self, requests: list[Request]) -> dict[str, asyncio.Queue[RequestOutput]]:
        limit = self.options.max_running_requests + self.options.max_queued_requests
        if len(requests) > limit:
            raise TooManyChoices(
                f"the request asks for {len(requests)} sequences (prompts x n); this server "
                f"holds at most {limit} (--max-running-requests + --max-queued-requests)"
            )
        if self.in_flight + len(requests) > limit:
            raise Overloaded(
                f"server is at capacity ({self.in_flight} sequences in flight, limit {limit})"
            )
        queues = {}
        for req in requests:
            queues[req.request_id] = self._queues[req.request_id] = asyncio.Queue()
            self._loop.submit(req)
        return queues

    def abort(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            if self._queues.pop(rid, None) is not None:
                self._loop.abort(rid)

    def open(self, requests: list[Request]) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Submit `requests` now (raising Overloaded at once) and return an iterator of
        (index, output) in arrival order. Closing it early (client gone) aborts the rest."""
        return self._iterate(self.submit(requests))

    async def _iterate(
        self, queues: dict[str, asyncio.Queue[RequestOutput]]
    ) -> AsyncIterator[tuple[int, RequestOutput]]:
        pending = {asyncio.ensure_future(q.get()): i for i, q in enumerate(queues.values())}
        ids = list(queues)
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: pending[f]):
                    i = pending.pop(fut)
                    out = fut.result()
                    yield i, out
                    if out.finished:
                        self._queues.pop(ids[i], None)
                    else:
                        pending[asyncio.ensure_future(queues[ids[i]].get())] = i
        finally:
            for fut in pending:
                fut.cancel()
            self.abort([rid for rid in ids if rid in self._queues])
