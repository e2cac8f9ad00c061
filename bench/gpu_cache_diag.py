"""Where a prompt-cache hit's time to first token goes, in-process (no HTTP), on a random
Llama-3.2-1B-shaped model: the lookup and restore, the prefill of the new tokens, and the
rest; after a restart, the same with the disk read. Each part is synchronised (mx.eval)
so its device time is charged to it.

    python bench/gpu_cache_diag.py [--system-tokens 8000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_batching import VOCAB, build_model_dir  # noqa: E402

TIMES: dict[str, float] = defaultdict(float)


def timed(cls, name: str, label: str, sync) -> None:
    fn = getattr(cls, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(args, out)
        TIMES[label] += time.perf_counter() - t
        return out

    setattr(cls, name, wrapper)


def ids(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(2, VOCAB) for _ in range(n)]


class Loop:
    def __init__(self, model_dir: Path, cache_dir: Path) -> None:
        from mlx_textgen.cache.manager import CacheOptions
        from mlx_textgen.config import ModelConfig
        from mlx_textgen.engine.loop import EngineLoop, LoopOptions

        self.done = threading.Event()
        self.first: float | None = None
        opts = LoopOptions(
            cache_root=Path("/tmp/bench-cache"),
            prompt_cache=CacheOptions(root=cache_dir, ram_budget_bytes=8 << 30),
        )
        self.loop = EngineLoop([ModelConfig(str(model_dir), model_name="m")], opts, self._emit)
        self.loop.start()
        self.loop.ready.wait()
        self.n = 0
        self.cached = 0

    def _emit(self, outs) -> None:
        for o in outs:
            self.first = self.first or time.perf_counter()
            self.cached = o.cached_tokens
            if o.finished:
                self.done.set()

    def ttft(self, prompt: list[int]) -> float:
        from mlx_textgen.engine.request import Request, SamplingParams

        TIMES.clear()
        self.done.clear()
        self.first = None
        self.n += 1
        t = time.perf_counter()
        self.loop.submit(
            Request(
                f"r{self.n}",
                prompt,
                SamplingParams(max_tokens=4, temperature=0, ignore_eos=True),
                "m",
            )
        )
        self.done.wait()
        return self.first - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system-tokens", type=int, default=8000)
    ap.add_argument("--shape", default="1b")
    a = ap.parse_args()
    import mlx.core as mx

    from mlx_textgen.cache.manager import PromptCacheManager
    from mlx_textgen.cache.store import DiskStore
    from mlx_textgen.engine.caching import EngineCache
    from mlx_textgen.engine.prefill import PrefillJob

    def sync_cache(_args, out):
        mx.eval([c.state for c in out.cache if c.keys is not None])

    timed(EngineCache, "start", "lookup+restore", sync_cache)
    timed(PrefillJob, "step", "prefill", lambda a_, o: None)  # step evaluates its own work
    timed(DiskStore, "get", "disk read+verify", lambda a_, o: None)
    timed(PromptCacheManager, "commit", "commit", lambda a_, o: None)

    print("device:", mx.default_device(), flush=True)
    _, model_dir = build_model_dir(a.shape, Path("/tmp/bench-models"))
    cache_dir = Path("/tmp/diag-cache")
    shutil.rmtree(cache_dir, ignore_errors=True)
    systems = [ids(s, a.system_tokens) for s in range(3)]

    def show(label: str, loop: Loop, prompt: list[int]) -> float:
        t = loop.ttft(prompt)
        parts = ", ".join(f"{k} {v * 1000:.1f}" for k, v in TIMES.items())
        print(
            f"{label:<28} ttft {t * 1000:7.1f} ms  cached {loop.cached:>5}  [{parts}]", flush=True
        )
        return t

    loop = Loop(model_dir, cache_dir)
    show("warm-up 64", loop, ids(7, 64))
    for i in range(3):
        show("30-token prompt", loop, ids(9 + i, 30))
    for s in range(3):
        show(f"miss, system {s}", loop, systems[s] + ids(100 + s, 30))
    show("cold, same length (no hit)", loop, ids(4242, a.system_tokens + 30))
    for r in range(2):
        for s in range(3):
            show(f"hit, system {s}", loop, systems[s] + ids(200 + 10 * r + s, 30))
    loop.loop.stop()
    del loop
    mx.clear_cache()
    loop = Loop(model_dir, cache_dir)
    show("restart: warm-up 64", loop, ids(7, 64))
    show("restart: cold same length", loop, ids(4343, a.system_tokens + 30))
    show("restart: first hit (disk)", loop, systems[0] + ids(300, 30))
    show("restart: second hit (disk)", loop, systems[1] + ids(301, 30))
    show("restart: hit again (RAM)", loop, systems[0] + ids(302, 30))
    loop.loop.stop()


if __name__ == "__main__":
    main()
