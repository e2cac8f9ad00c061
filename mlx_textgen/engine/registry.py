"""Several models behind one endpoint: one engine process per resident model.

Why a process per model: MLX's allocator keeps freed buffers for reuse (its cache), so a
model unloaded inside a long-lived process leaves its memory with that process; the exit
of the model's own process returns all of it (bench/RESULTS.md measures it). It also
keeps the models apart: each has its own continuous batch on its own MLX thread, a load
never stalls another model's steps, and a crash takes down only its own model.

Requests hold a `Lease` on their model from arrival to the end of their response
(api/leases.py takes it); a model with leases is never unloaded. A request for a model
that isn't resident starts its load; when the limits (`max_loaded_models`,
`max_model_memory_gb`) leave no room, the least recently used idle model is unloaded, or
a busy one drains; after `model_wait_timeout` the request gets NoRoom (a 503). Everything
here runs on the event loop; process starts and stops go to threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mlx_textgen.config import ModelConfig
from mlx_textgen.engine.engine import Engine, EngineOptions, EngineStartupError, Overloaded
from mlx_textgen.engine.request import Request
from mlx_textgen.engine.residency import Residency, Slot, State

log = logging.getLogger("mlx_textgen.models")

T = TypeVar("T")
_GB = float(1 << 30)
PROGRESS_EVERY_S = 10.0


class ModelUnavailable(RuntimeError):
    """The model can't be loaded (missing, unreadable, too large for the budget)."""

    def __init__(self, message: str, code: str = "model_load_failed") -> None:
        super().__init__(message)
        self.code = code


class ModelBusy(RuntimeError):
    """An admin unload of a model that has requests, or is pinned."""


class NoRoom(RuntimeError):
    """Nothing could be unloaded in time to make room for the model; retry later."""

    retry_after = 5


@dataclass(eq=False)
class Lease:
    """A request's hold on a model: while any is held, the model stays resident."""

    slot: Slot
    released: bool = False


class ModelRegistry:
    """The configured models, their engines, and the rules for loading and unloading."""

    def __init__(
        self,
        configs: list[ModelConfig],
        options: EngineOptions,
        *,
        max_loaded_models: int = 1,
        max_model_memory_gb: float | None = None,
        wait_timeout: float = 60.0,
    ) -> None:
        self.options = options
        self.slots = [Slot(c) for c in configs]
        self._by_name = {n: s for s in self.slots for n in s.config.names()}
        budget = None if max_model_memory_gb is None else int(max_model_memory_gb * _GB)
        self.limits = Residency(max_loaded_models, budget)
        self.wait_timeout = wait_timeout
        self._aio: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._ttl_task: asyncio.Task | None = None
        self._retired: dict[str, float] = {}  # counters of engines that have exited, so totals never go back
        self._started = time.time()

    # -- names ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slots]

    def resolve(self, name: str | None) -> Slot | None:
        """The slot a request's `model` names (own name or alias); None: the first model."""
        return self.slots[0] if name is None else self._by_name.get(name)

    @property
    def models(self) -> dict[str, Any]:
        """ModelInfo of the loaded models, by name."""
        return {s.name: s.info for s in self.slots if s.state == State.LOADED}

    # -- leases -----------------------------------------------------------------------

    async def acquire(self, name: str | None) -> Lease | None:
        """Hold the model `name` names, loading it first if needed; None for an unknown
        name (the route answers 404). Raises ModelUnavailable or NoRoom."""
        slot = self.resolve(name)
        if slot is None:
            return None
        await self._ensure_loaded(slot, time.monotonic() + self.wait_timeout)
        slot.leases += 1  # no await since the check: it can't have been unloaded
        slot.last_used = time.monotonic()
        return Lease(slot)

    def release(self, lease: Lease | None) -> None:
        if lease is None or lease.released:
            return
        lease.released = True
        lease.slot.leases -= 1
        lease.slot.last_used = time.monotonic()
        self._notify()

    async def _ensure_loaded(self, slot: Slot, deadline: float) -> None:
        slot.waiters += 1
        try:
            while not (slot.state == State.LOADED and not slot.draining):
                if slot.state == State.UNLOADED:
                    slot.state = State.QUEUED
                    slot.load_task = asyncio.ensure_future(self._load(slot, deadline))
                    slot.load_task.add_done_callback(_retrieve)
                if slot.state in (State.QUEUED, State.PREPARING, State.LOADING):
                    await asyncio.shield(slot.load_task)
                else:  # unloading, or draining for another model: wait for it
                    await self._wait_change(slot, deadline)
        finally:
            slot.waiters -= 1

    # -- load and unload ----------------------------------------------------------------

    async def _load(self, slot: Slot, deadline: float) -> None:
        engine: Engine | None = None
        began = time.monotonic()
        try:
            slot.state = State.PREPARING
            engine = Engine(slot.config, self.options, on_gone=self._engine_gone)
            log.info("model %s: loading (starting its engine process)", slot.name)
            footprint = await self._progress(slot, "resolving", engine.start)
            self._check_size(slot, footprint)
            await self._make_room(slot, deadline, with_memory=True)
            slot.state = State.LOADING
            await self._progress(slot, "loading weights", engine.load)
            self._loaded(slot, engine, footprint, time.monotonic() - began)
        except BaseException as exc:
            slot.state, slot.reserved = State.UNLOADED, False
            slot.last_error = f"{type(exc).__name__}: {exc}"
            if engine is not None:
                await asyncio.to_thread(engine.stop)
            if isinstance(exc, EngineStartupError):
                log.error("model %s could not be loaded: %s", slot.name, exc)
                raise ModelUnavailable(f"The model `{slot.name}` could not be loaded: {exc}") from None
            raise
        finally:
            self._notify()

    def _check_size(self, slot: Slot, footprint: Any) -> None:
        override = slot.config.memory_gb
        slot.footprint = int(override * _GB) if override is not None else footprint.total
        budget = self.limits.budget_bytes
        shown = f"{override:.2f} GB (memory_gb)" if override is not None else footprint.describe()
        log.info("model %s: needs %s", slot.name, shown)
        if budget is not None and slot.footprint > budget:
            raise ModelUnavailable(
                f"The model `{slot.name}` needs {shown}, more than max_model_memory_gb "
                f"({budget / _GB:.2f} GB)", code="model_too_large",
            )  # fmt: skip

    def _loaded(self, slot: Slot, engine: Engine, footprint: Any, took: float) -> None:
        if self._aio is not None:
            engine.attach(self._aio)
        measured = engine.memory.get("mlx_active_bytes", 0)
        if slot.config.memory_gb is None and measured:
            slot.footprint = measured + footprint.kv_headroom  # the weights as they came out
        slot.engine, slot.info, slot.state = engine, engine.info, State.LOADED
        slot.created = slot.created or engine.info.created
        slot.loads += 1
        slot.last_used, slot.last_error = time.monotonic(), None
        log.info("model %s: ready in %.1fs (engine pid %s, MLX active %.2f GB, %d of %d resident)",
                 slot.name, took, engine.pid, measured / _GB, self._resident(),
                 self.limits.max_models)  # fmt: skip

    async def _progress(self, slot: Slot, phase: str, fn: Callable[[], T]) -> T:
        """Run a blocking step in a thread, saying in the log every so often that it goes on."""
        began = time.monotonic()
        task = asyncio.ensure_future(asyncio.to_thread(fn))
        while True:
            done, _ = await asyncio.wait({task}, timeout=PROGRESS_EVERY_S)
            if done:
                return task.result()
            log.info("model %s: still %s (%.0fs)", slot.name, phase, time.monotonic() - began)

    async def _make_room(self, slot: Slot, deadline: float, with_memory: bool) -> None:
        """Unload idle models (least recently used first) until `slot` fits; drain a busy
        one when none is idle; NoRoom when that can't work or takes past `deadline`."""
        try:
            while not self.limits.fits(self.slots, slot, with_memory):
                if self.limits.hopeless(self.slots, slot, with_memory):
                    pinned = ", ".join(s.name for s in self.slots if s.pinned and s is not slot)
                    raise NoRoom(f"No room to load the model `{slot.name}`: the resident "
                                 f"models that would have to go are pinned ({pinned}).")
                victim = self.limits.victim(self.slots, slot)
                if victim is not None:
                    await self._unload(victim, f"to make room for {slot.name}")
                    continue
                drain = self.limits.to_drain(self.slots, slot)
                if drain is not None:
                    drain.draining, drain.drained_for = True, slot
                    log.info("model %s: draining (its running requests finish) to make room "
                             "for %s", drain.name, slot.name)  # fmt: skip
                await self._wait_change(slot, deadline)
            slot.reserved = with_memory
        finally:
            for s in self.slots:
                if s.drained_for is slot and s.state == State.LOADED:
                    s.draining, s.drained_for = False, None
                    self._notify()

    async def _wait_change(self, slot: Slot, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            event = self._event()
            try:
                await asyncio.wait_for(event.wait(), remaining)
                return
            except asyncio.TimeoutError:
                pass
        busy = ", ".join(f"{s.name} ({s.leases} requests)" for s in self.slots if s.leases)
        raise NoRoom(f"No room to load the model `{slot.name}` within {self.wait_timeout:g}s: "
                     f"the resident models are busy ({busy or 'loading'}).")

    async def _unload(self, slot: Slot, why: str) -> None:
        """Stop the model's engine process; its exit returns the memory."""
        engine, slot.engine = slot.engine, None
        slot.state, slot.draining, slot.drained_for = State.UNLOADING, False, None
        self._notify()
        began = time.monotonic()
        try:
            await asyncio.to_thread(engine.stop)
        finally:
            self._retire(engine)
            # Its tokenizer goes too: kept, it held ~50 MB of this process per model.
            slot.state, slot.reserved, slot.info = State.UNLOADED, False, None
            self._notify()
        await asyncio.to_thread(_trim_heap)
        log.info("model %s: unloaded (%s) in %.1fs; %.2f GB returned", slot.name, why,
                 time.monotonic() - began, slot.footprint / _GB)  # fmt: skip

    def _engine_gone(self, engine: Engine) -> None:
        """An engine process exited on its own: its requests have failed; the model is
        marked unloaded, so the next request for it loads it again."""
        for slot in self.slots:
            if slot.engine is engine:
                slot.engine, slot.state, slot.reserved = None, State.UNLOADED, False
                slot.info = None
                slot.draining, slot.drained_for = False, None
                slot.crashes += 1
                slot.last_error = (
                    f"the engine process exited unexpectedly (exit code {engine.exitcode})"
                )
                self._retire(engine)
                log.error("model %s: marked unloaded; the next request for it reloads it",
                          slot.name)
                self._notify()

    def _retire(self, engine: Engine) -> None:
        for k, v in engine.stats.items():
            self._retired[k] = self._retired.get(k, 0) + v

    def _resident(self) -> int:
        return sum(1 for s in self.slots if s.state in (State.LOADING, State.LOADED))

    # -- events -----------------------------------------------------------------------

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        """Wake everyone waiting for a change of state (they re-check their condition)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # -- the engines as one ------------------------------------------------------------

    def open(self, requests: list[Request], client: str | None = None) -> Any:
        """Submit to the engine of the requests' model (all share one); `client`: who asks
        (engine/admission.py)."""
        slot = self.resolve(requests[0].model)
        if slot is None or slot.engine is None or not slot.engine.alive:
            name = requests[0].model
            raise Overloaded(f"the model `{name}` is not loaded (its engine process exited)")
        return slot.engine.open(requests, client)

    def engines(self) -> list[Engine]:
        return [s.engine for s in self.slots if s.state == State.LOADED and s.engine is not None]

    @property
    def in_flight(self) -> int:
        return sum(e.in_flight for e in self.engines())

    @property
    def alive(self) -> bool:
        """The server serves on when an engine dies; only its model's requests fail."""
        return True

    @property
    def stats(self) -> dict[str, float]:
        """Counters summed over every engine since start (those unloaded included)."""
        total = dict(self._retired)
        for e in self.engines():
            for k, v in e.stats.items():
                total[k] = total.get(k, 0) + v
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in total.items()}

    # -- admin ------------------------------------------------------------------------

    async def load_model(self, name: str) -> Slot | None:
        """Load a model now (POST /v1/models/{id}/load); None for an unknown name."""
        lease = await self.acquire(name)
        self.release(lease)
        return lease.slot if lease is not None else None

    async def unload_model(self, name: str) -> Slot | None:
        """Unload a model now (POST /v1/models/{id}/unload); ModelBusy while it has
        requests or is pinned; None for an unknown name."""
        slot = self.resolve(name)
        if slot is None or slot.state == State.UNLOADED:
            return slot
        if slot.pinned:
            raise ModelBusy(f"The model `{slot.name}` is pinned (pin: true); it stays loaded.")
        if slot.state != State.LOADED or not slot.idle:
            raise ModelBusy(f"The model `{slot.name}` is {slot.state.value} with {slot.leases} "
                            "requests; it is unloaded only when idle.")  # fmt: skip
        await self._unload(slot, "admin request")
        return slot

    async def call(self, op: str, arg: Any = None) -> Any:
        """An admin operation (worker.OPS) over the loaded engines, merged (cache routes)."""
        if op == "cache_entries":
            return _merge_entries(await asyncio.gather(*(e.call(op) for e in self.engines())))
        if op == "cache_clear" and arg is not None:
            slot = self.resolve(arg)
            if slot is not None and slot.state == State.LOADED:
                return await slot.engine.call(op, slot.name)
            return await asyncio.to_thread(self._clear_on_disk, arg)
        if op == "cache_clear":
            counts = await asyncio.gather(*(e.call(op, e.name) for e in self.engines()))
            return sum(counts) + await asyncio.to_thread(self._clear_on_disk, None)
        raise ValueError(f"unknown admin operation {op!r}")

    def _clear_on_disk(self, name: str | None) -> int:
        """The disk tier of a model that isn't loaded (or of every model), as `mlx_textgen
        cache clear` does: its entries are found by the name in their fingerprint."""
        from mlx_textgen.cache.fingerprint import _slug
        from mlx_textgen.cache.store import DiskStore

        cache = self.options.prompt_cache
        if cache is None or cache.disk_budget_bytes <= 0:
            return 0
        store = DiskStore(cache.root, budget_bytes=0)
        if name is None:
            return store.delete_all()
        fps = {r.fingerprint for r in store.scan() if r.fingerprint.rsplit("-", 1)[0] == _slug(name)}
        return sum(store.delete_all(fp) for fp in fps)

    async def refresh_memory(self) -> None:
        """Each loaded engine's memory_stats() as of now (GET /health?memory=true)."""
        for e in self.engines():
            e.memory = await e.call("memory")

    def card(self, slot: Slot) -> dict[str, Any]:
        """The model's /v1/models entry: OpenAI's fields plus where it stands here."""
        created = slot.created or int(self._started)
        return {"id": slot.name, "object": "model", "created": created, "owned_by": "mlx_textgen",
                "loaded": slot.state == State.LOADED, "state": slot.state.value,
                "aliases": list(slot.config.aliases), "pinned": slot.pinned}  # fmt: skip

    def health(self) -> dict[str, Any]:
        """Each model's engine and state, for GET /health."""
        models = {}
        for s in self.slots:
            e = s.engine
            models[s.name] = {
                "state": s.state.value, "engine_pid": e.pid if e is not None else None,
                "in_flight": e.in_flight if e is not None else 0, "leases": s.leases,
                "waiting": s.waiters, "pinned": s.pinned, "loads": s.loads,
                "engine_crashes": s.crashes,
                "footprint_gb": round(s.footprint / _GB, 3) if s.footprint else None,
                "memory": dict(e.memory) if e is not None else None, "last_error": s.last_error,
            }  # fmt: skip
        budget = self.limits.budget_bytes
        return {
            "max_loaded_models": self.limits.max_models,
            "max_model_memory_gb": None if budget is None else round(budget / _GB, 3),
            "reserved_gb": round(sum(s.footprint for s in self.slots if s.reserved) / _GB, 3),
            "models": models,
        }

    # -- life cycle ---------------------------------------------------------------------

    def preload(self) -> None:
        """Load the models marked `preload`, before serving; EngineStartupError naming the
        model when one can't be (the server then doesn't start)."""
        for slot in [s for i, s in enumerate(self.slots) if s.config.preloaded(i)]:
            engine = Engine(slot.config, self.options, on_gone=self._engine_gone)
            began = time.monotonic()
            log.info("model %s: preloading", slot.name)
            try:
                footprint = engine.start()
                self._check_size(slot, footprint)
                if not self.limits.fits(self.slots, slot, with_memory=True):
                    raise ModelUnavailable(f"The preloaded models don't fit max_model_memory_gb "
                                           f"({slot.name} needs {footprint.describe()})")
                engine.load()
            except (EngineStartupError, ModelUnavailable) as exc:
                engine.stop()
                self.stop()
                raise EngineStartupError(f"model `{slot.name}`: {exc}") from None
            slot.reserved = True
            self._loaded(slot, engine, footprint, time.monotonic() - began)

    def attach(self, aio: asyncio.AbstractEventLoop) -> None:
        """Serve on `aio` (the server's loop): deliveries, waits, the idle-TTL sweep."""
        self._aio = aio
        for engine in self.engines():
            engine.attach(aio)
        if any(s.config.idle_ttl is not None for s in self.slots):
            self._ttl_task = aio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Unload models idle past their `idle_ttl`."""
        period = min(1.0, *(s.config.idle_ttl / 4 for s in self.slots if s.config.idle_ttl))
        while True:
            await asyncio.sleep(max(period, 0.05))
            now = time.monotonic()
            for s in self.slots:
                ttl = s.config.idle_ttl
                if (ttl is not None and s.state == State.LOADED and s.idle and s.waiters == 0
                        and not s.pinned and now - s.last_used >= ttl):  # fmt: skip
                    await self._unload(s, f"idle for {ttl:g}s")

    def stop(self) -> None:
        """Stop every engine process (at shutdown)."""
        if self._ttl_task is not None:
            self._ttl_task.cancel()
        for slot in self.slots:
            if slot.engine is not None:
                slot.engine.stop()
                slot.engine, slot.state = None, State.UNLOADED


def _trim_heap() -> None:
    """Give the freed tokenizer's memory back to the system: collected, then glibc's free
    lists trimmed (without the trim, this process kept ~50 MB per unloaded model)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _merge_entries(per_engine: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every engine lists the whole disk tier; an entry of a loaded model is best told by
    its own engine (it knows the RAM tier and the model's name)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for entries in per_engine:
        for e in entries:
            key = (e["fingerprint"], e["key"])
            if key not in best or e.get("current") and not best[key].get("current"):
                best[key] = e
    return sorted(best.values(), key=lambda e: e["last_use"], reverse=True)


def _retrieve(task: asyncio.Future) -> None:
    """A load nobody waits for any more: its error is logged already; don't warn again."""
    if not task.cancelled():
        task.exception()


__all__ = ["Lease", "ModelBusy", "ModelRegistry", "ModelUnavailable", "NoRoom"]
