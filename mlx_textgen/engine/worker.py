"""The engine in its own process, and the pipe between it and the HTTP process.

Python runs one thread at a time per process. In one process, the event loop's work for
every streamed token (waking up, framing, writing to sockets) held the lock the model
thread needs to queue its next step: on an H100 that cost a sixth of throughput at 16
streams. So the engine loop runs in a child process (spawned: MLX is never forked) and
the HTTP process only tokenizes, frames and writes. The child sends each step's outputs
as one message; the parent sends requests, aborts, admin operations and stop.

Messages, child -> parent: ("ready", models) | ("failed", reason) | ("out", (outputs,
stats)) | ("result", (call_id, ok, value, stats)). Parent -> child: ("add", Request) |
("abort", request_id) | ("call", (call_id, op, arg)) | ("stop", None). A closed pipe on
either side means the other is gone: the child stops, the parent fails what is running.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from mlx_textgen.config import ModelConfig

log = logging.getLogger("mlx_textgen.engine")

OnMessage = Callable[[str, Any], None]


class EngineStartupError(RuntimeError):
    """The engine process could not load its models; the message is one line."""


# -- admin operations, run on the engine's MLX thread ------------------------------------


def _cache_entries(loop: Any, _arg: Any) -> Any:
    return loop.cache.entries(loop.models)


def _cache_clear(loop: Any, model: str | None) -> int:
    return loop.cache.clear(loop.models[model] if model is not None else None)


OPS: dict[str, Callable[[Any, Any], Any]] = {
    "cache_entries": _cache_entries,
    "cache_clear": _cache_clear,
}


class _Sender:
    """Sends (kind, value) messages from any thread; a closed pipe is ignored here (the
    reading side notices the other process is gone)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def __call__(self, kind: str, value: Any) -> None:
        with self._lock:
            try:
                self._conn.send((kind, value))
            except (OSError, ValueError):
                pass


# -- the parent's side -------------------------------------------------------------------


class EngineProcess:
    """Starts the engine process and carries messages both ways; `on_message(kind, value)`
    runs on a reader thread for every message after "ready"."""

    def __init__(
        self,
        configs: list[ModelConfig],
        loop_options: dict[str, Any],
        blas: str,
        on_message: OnMessage,
    ) -> None:
        """`loop_options`: LoopOptions' fields, with `prompt_cache` as CacheOptions' fields or
        None; plain values, so that the child imports nothing of MLX before its BLAS is set."""
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.send = _Sender(self._conn)
        self._on_message = on_message
        self._process = ctx.Process(
            target=_child_main,
            args=(child, configs, loop_options, blas, logging.getLogger().level),
            name="mlx_textgen-engine",
            daemon=True,
        )
        self._reader = threading.Thread(
            target=self._read, name="mlx_textgen-engine-reader", daemon=True
        )
        self._child_end = child

    def start(self) -> dict[str, Any]:
        """Start the process and wait for its models (ModelInfo by name)."""
        self._process.start()
        self._child_end.close()  # the child holds its own copy
        try:
            kind, value = self._conn.recv()
        except EOFError:
            raise EngineStartupError(
                "RuntimeError: the engine process exited while starting"
            ) from None
        if kind == "failed":
            raise EngineStartupError(value)
        self._reader.start()
        return value

    def stop(self, timeout: float = 30) -> None:
        if self._process.is_alive():
            self.send("stop", None)
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)

    def _read(self) -> None:
        while True:
            try:
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                self._on_message("gone", None)
                return
            self._on_message(kind, value)


# -- the child's side --------------------------------------------------------------------


def _child_main(
    conn: Connection,
    configs: list[ModelConfig],
    loop_options: dict[str, Any],
    blas: str,
    log_level: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mlx_textgen.blas import select_blas

    select_blas(blas)  # before MLX is imported in this process
    # tqdm's default lock is a multiprocessing semaphore, which the exit below would leave
    # registered (a "leaked semaphore" warning at shutdown); this process needs a thread lock.
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    from mlx_textgen.cache.manager import CacheOptions
    from mlx_textgen.engine.loop import EngineLoop, LoopOptions

    cache = loop_options.get("prompt_cache")
    options = LoopOptions(
        **{**loop_options, "prompt_cache": CacheOptions(**cache) if cache else None}
    )

    send = _Sender(conn)

    def emit(outs: list[Any]) -> None:
        send("out", (outs, dict(loop.stats)))

    loop = EngineLoop(configs, options, emit)
    commands = threading.Thread(target=_serve, args=(conn, loop, send), name="engine-commands")
    commands.daemon = True
    commands.start()
    loop.run()  # this thread runs MLX: see EngineLoop.run
    if loop.startup_error is not None:
        exc = loop.startup_error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        send("failed", f"{type(exc).__name__}: {first}")
    # The loop has stopped (or never started) and its disk writes are flushed. Leave
    # without running C++ static destructors: MLX's thread-local streams abort
    # ("terminate called without an active exception") when torn down at interpreter exit.
    logging.shutdown()
    os._exit(0)


def _serve(conn: Connection, loop: Any, send: Callable[[str, Any], None]) -> None:
    """The command thread: once the models are loaded, pass commands to the loop (a failed
    startup is reported by the main thread, which has left the loop by then)."""
    loop.ready.wait()
    if loop.startup_error is not None:
        return
    send("ready", dict(loop.models))
    _serve_commands(conn, loop, send)


def _serve_commands(conn: Connection, loop: Any, send: Callable[[str, Any], None]) -> None:
    while True:
        try:
            kind, value = conn.recv()
        except (EOFError, OSError):
            kind, value = "stop", None
        if kind == "add":
            loop.submit(value)
        elif kind == "abort":
            loop.abort(value)
        elif kind == "call":
            call_id, op, arg = value
            fut: Future = Future()
            fut.add_done_callback(lambda f, cid=call_id: _reply(send, cid, f, dict(loop.stats)))
            loop.call(lambda lp, op=op, arg=arg: OPS[op](lp, arg), fut)
        elif kind == "stop":
            loop.stop(wait=False)  # the main thread leaves once the loop has stopped
            return


def _reply(send: Callable[[str, Any], None], call_id: int, fut: Future, stats: dict) -> None:
    """An admin call's result, with the counters as they stand after it (an idle engine
    sends no outputs, so this is how they catch up)."""
    exc = fut.exception()
    if exc is None:
        send("result", (call_id, True, fut.result(), stats))
    else:
        send("result", (call_id, False, f"{type(exc).__name__}: {exc}", stats))
