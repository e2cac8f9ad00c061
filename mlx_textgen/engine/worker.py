"""The engine in its own process, and the pipe between it and the HTTP process.

Python runs one thread at a time per process. In one process, the event loop's work for
every streamed token (waking up, framing, writing to sockets) held the lock the model
thread needs to queue its next step: on an H100 that cost a sixth of throughput at 16
streams. So the engine loop runs in a child process (spawned: MLX is never forked) and
the HTTP process only tokenizes, frames and writes. The child sends each step's outputs
as one message; the parent sends requests, aborts, admin operations and stop.

One process serves one model (engine/registry.py keeps one per resident model): MLX's
allocator keeps freed buffers for reuse, so only a process's exit returns all of a
model's memory. Start is two-phase, so that the parent can make room before the weights
load: the child resolves the model (a GGUF import included) and sends its estimated
footprint, then loads only when told to.

Messages, child -> parent: ("prepared", Footprint) | ("ready", (models, memory)) |
("failed", reason) | ("out", (outputs, stats)) | ("result", (call_id, ok, value, stats)).
Parent -> child: ("load", None) | ("add", Request) | ("abort", request_id) |
("call", (call_id, op, arg)) | ("stop", None). A closed pipe on either side means the
other is gone: the child stops, the parent fails what is running.
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
from pathlib import Path
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


def memory_stats() -> dict[str, int]:
    """This process's resident set and MLX's active (in use) and cache (freed, kept) bytes."""
    import mlx.core as mx

    rss = 0
    try:  # Linux; elsewhere only MLX's numbers
        rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    return {"rss_bytes": rss, "mlx_active_bytes": int(mx.get_active_memory()),
            "mlx_cache_bytes": int(mx.get_cache_memory())}  # fmt: skip


OPS: dict[str, Callable[[Any, Any], Any]] = {
    "cache_entries": _cache_entries,
    "cache_clear": _cache_clear,
    "memory": lambda loop, _arg: memory_stats() | loop.load_counts(),  # with what it holds
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
    """Starts the engine process of one model and carries messages both ways;
    `on_message(kind, value)` runs on a reader thread for every message after "ready"."""

    def __init__(
        self,
        config: ModelConfig,
        loop_options: dict[str, Any],
        blas: str,
        on_message: OnMessage,
    ) -> None:
        """`loop_options`: LoopOptions' fields, with `prompt_cache` as CacheOptions' fields or
        None, plus `kv_headroom_tokens`; plain values, so that the child imports nothing of
        MLX before its BLAS is set."""
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.send = _Sender(self._conn)
        self._on_message = on_message
        self._process = ctx.Process(
            target=_child_main,
            args=(child, config, loop_options, blas, logging.getLogger().level),
            name=f"mlx_textgen-engine-{config.resolved_name()}",
            daemon=True,
        )
        self._reader = threading.Thread(
            target=self._read, name="mlx_textgen-engine-reader", daemon=True
        )
        self._child_end = child

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def reap(self, timeout: float = 2.0) -> int | None:
        """Wait (briefly) for a process whose pipe closed to be gone; its exit status."""
        self._process.join(timeout)
        return self._process.exitcode

    def start(self) -> Any:
        """Start the process and wait until it has resolved its model; returns the model's
        estimated Footprint (models/memory.py). Nothing is loaded yet: see `load`."""
        self._process.start()
        self._child_end.close()  # the child holds its own copy
        return self._expect("prepared")

    def load(self) -> tuple[dict[str, Any], dict[str, int]]:
        """Load the weights; returns (ModelInfo by name, memory_stats after the load)."""
        self.send("load", None)
        value = self._expect("ready")
        self._reader.start()
        return value

    def _expect(self, wanted: str) -> Any:
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            code = self._process.exitcode
            raise EngineStartupError(
                f"RuntimeError: the engine process exited while starting (exit code {code})"
            ) from None
        if kind == "failed":
            raise EngineStartupError(value)
        assert kind == wanted, (kind, wanted)
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
    config: ModelConfig,
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
    send = _Sender(conn)
    options = dict(loop_options)
    headroom = options.pop("kv_headroom_tokens", 0)
    if _prepare(conn, send, config, options, headroom):
        _run_loop(conn, send, config, options)
    # The loop has stopped (or never started) and its disk writes are flushed. Leave
    # without running C++ static destructors: MLX's thread-local streams abort
    # ("terminate called without an active exception") when torn down at interpreter exit.
    logging.shutdown()
    os._exit(0)


def _one_line(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


def _prepare(
    conn: Connection, send: _Sender, config: ModelConfig, options: dict[str, Any], headroom: int
) -> bool:
    """Phase one: resolve the model (importing a GGUF once), send its estimated footprint,
    and wait for the parent's go; False if it can't be resolved or the parent said stop."""
    try:
        from mlx_textgen.models.loader import on_cpu, resolve_model_dir
        from mlx_textgen.models.memory import estimate

        float_weights = on_cpu() and options.get("cpu_weights", "float") == "float"
        model_dir = resolve_model_dir(config, Path(options["cache_root"]), float_weights)
        send("prepared", estimate(model_dir, float_weights, _context(model_dir, config), headroom))
    except BaseException as exc:  # reported to the parent, which names the model
        send("failed", _one_line(exc))
        return False
    try:
        kind, _ = conn.recv()
    except (EOFError, OSError):
        return False
    return kind == "load"


def _context(model_dir: Path, config: ModelConfig) -> int:
    """The context window as config.json gives it (the tokenizer isn't loaded yet)."""
    import json

    from mlx_textgen.models.loader import context_length

    try:
        model_config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        model_config = {}
    return context_length(model_config, None, config.max_context_tokens)


def _run_loop(conn: Connection, send: _Sender, config: ModelConfig, options: dict[str, Any]) -> None:
    """Phase two: load the weights and run the loop until told to stop."""
    from mlx_textgen.cache.manager import CacheOptions
    from mlx_textgen.engine.loop import EngineLoop, LoopOptions

    cache = options.get("prompt_cache")
    loop_options = LoopOptions(**{**options, "prompt_cache": CacheOptions(**cache) if cache else None})

    def emit(outs: list[Any]) -> None:
        send("out", (outs, dict(loop.stats)))

    loop = EngineLoop([config], loop_options, emit)
    commands = threading.Thread(target=_serve, args=(conn, loop, send), name="engine-commands")
    commands.daemon = True
    commands.start()
    loop.run()  # this thread runs MLX: see EngineLoop.run
    if loop.startup_error is not None:
        send("failed", _one_line(loop.startup_error))


def _serve(conn: Connection, loop: Any, send: Callable[[str, Any], None]) -> None:
    """The command thread: once the models are loaded, pass commands to the loop (a failed
    startup is reported by the main thread, which has left the loop by then)."""
    loop.ready.wait()
    if loop.startup_error is not None:
        return
    send("ready", (dict(loop.models), memory_stats()))
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
