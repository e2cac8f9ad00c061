"""Where a batched wave's time goes, step by step: raw BatchGenerator against the engine
loop (in-process, fed as HTTP delivers requests), with every loop phase timed, plus the
server over HTTP with fresh prompts and with repeated ones (prompt-cache hits).

    python bench/gpu_timeline.py --shape 1b --streams 4,16 --tokens 256 --rounds 5 [--out DIR]

Prints, per path: median tok/s and its ratio to raw in the same round; then, for the
median round of each in-process path, where the wall time went (phase sums) and the
slowest iterations. With --out, every timeline is written as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import random
import sys
import threading
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_batching import PROMPT_LEN, VOCAB, build_model_dir, server_wave, start_server  # noqa: E402

_salt = iter(range(10**9))


def fresh_prompts(n: int) -> list[list[int]]:
    """Prompts never seen before in this process (no prompt-cache hits)."""
    rng = random.Random(1000 + next(_salt))
    return [[rng.randrange(2, VOCAB) for _ in range(PROMPT_LEN)] for _ in range(n)]


class Timeline:
    """(start, seconds, phase, running) records, relative to the wave's start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[tuple[float, float, str, int]] = []

    def add(self, start: float, phase: str, running: int) -> None:
        end = time.perf_counter()
        self.events.append((start - self.t0, end - start, phase, running))

    def summary(self, wall: float) -> str:
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for _, d, p, _ in self.events:
            sums[p] = sums.get(p, 0.0) + d
            counts[p] = counts.get(p, 0) + 1
        lines = [f"    wall {wall * 1e3:8.1f} ms"]
        for p in sorted(sums, key=lambda k: -sums[k]):
            ds = sorted(d for _, d, q, _ in self.events if q == p)
            lines.append(f"    {p:<14} {sums[p] * 1e3:8.1f} ms  n={counts[p]:<5} median "
                         f"{median(ds) * 1e3:6.2f}  p90 {ds[int(0.9 * (len(ds) - 1))] * 1e3:6.2f}  "
                         f"max {ds[-1] * 1e3:7.2f} ms")
        slow = sorted(self.events, key=lambda e: -e[1])[:6]
        lines.append("    slowest: " + "; ".join(f"{p}@{s * 1e3:.0f}ms={d * 1e3:.1f}ms(b{r})"
                                                  for s, d, p, r in slow))
        return "\n".join(lines)


def raw_wave(model, n: int, tokens: int) -> tuple[float, Timeline]:
    from mlx_lm.generate import BatchGenerator

    gen = BatchGenerator(model, completion_batch_size=max(n, 16), prefill_batch_size=max(n, 16))
    tl = Timeline()
    gen.insert(fresh_prompts(n), max_tokens=[tokens] * n)
    total, finished = 0, 0
    while finished < n:
        s = time.perf_counter()
        _, rs = gen.next()
        tl.add(s, "gen.next", len(gen._generation_batch))
        total += len(rs)
        finished += sum(1 for r in rs if r.finish_reason)
    wall = time.perf_counter() - tl.t0
    gen.close()
    return total / wall, tl


class InProcess:
    """The engine loop on its own thread, fed directly; every phase of its loop timed."""

    def __init__(self, model_dir: Path, cache: bool) -> None:
        from mlx_textgen.cache.manager import CacheOptions
        from mlx_textgen.config import ModelConfig
        from mlx_textgen.engine.loop import EngineLoop, LoopOptions

        self.done = threading.Event()
        self.count = {"fin": 0, "tok": 0, "want": 0}
        root = Path("/tmp/bench-timeline-cache") / ("on" if cache else "off")
        opts = LoopOptions(cache_root=root, max_running_requests=16,
                           prompt_cache=CacheOptions(root=root / "prompt_cache") if cache else None)
        self.loop = EngineLoop([ModelConfig(str(model_dir), model_name="m")], opts, self._emit)
        self.tl = Timeline()
        for name in ("_admit", "_decode", "_prefill_step", "_expire", "_drain"):
            self._wrap(name)
        self.loop.start()
        self.loop.ready.wait()
        gen = self.loop._loaded.generator
        inner = gen.next

        def timed_next():
            s = time.perf_counter()
            try:
                return inner()
            finally:
                self.tl.add(s, " gen.next", len(self.loop._by_uid))

        gen.next = timed_next
        self.runs = 0

    def _wrap(self, name: str) -> None:
        inner = getattr(self.loop, name)

        def timed(*a, **k):
            s = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                if name != "_drain" or not k.get("block", a[0] if a else False):
                    self.tl.add(s, name, len(self.loop._by_uid))

        setattr(self.loop, name, timed)

    def _emit(self, outs) -> None:
        s = time.perf_counter()
        pickle.dumps((outs, dict(self.loop.stats)))  # what the engine process pays to send them
        self.tl.add(s, " emit.pickle", len(self.loop._by_uid))
        for o in outs:
            if o.finished:
                self.count["fin"] += 1
                self.count["tok"] += o.completion_tokens
        if self.count["fin"] >= self.count["want"]:
            self.done.set()

    def wave(self, n: int, tokens: int, stagger: float) -> tuple[float, Timeline]:
        from mlx_textgen.engine.request import Request, SamplingParams

        p = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
        self.done.clear()
        self.count.update(fin=0, tok=0, want=n)
        self.runs += 1
        self.tl = Timeline()
        for i, pr in enumerate(fresh_prompts(n)):
            self.loop.submit(Request(f"r{self.runs}-{i}", pr, p, "m"))
            if stagger:
                time.sleep(stagger)
        self.done.wait()
        wall = time.perf_counter() - self.tl.t0
        return self.count["tok"] / wall, self.tl


async def server_fresh(base: str, n: int, tokens: int) -> float:
    import gpu_batching

    saved = gpu_batching.prompts
    gpu_batching.prompts = fresh_prompts
    try:
        return await server_wave(base, n, tokens)
    finally:
        gpu_batching.prompts = saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--streams", default="4,16")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    import mlx.core as mx

    print("device:", mx.default_device(), flush=True)
    model, model_dir = build_model_dir(a.shape, Path("/tmp/bench-models"))
    proc = start_server(model_dir, 18200, 16)
    base = "http://127.0.0.1:18200"
    eng = InProcess(model_dir, cache=True)
    dump = {}
    try:
        for n in (int(x) for x in a.streams.split(",")):
            paths = {
                "raw BatchGenerator": lambda n=n: raw_wave(model, n, a.tokens),
                "loop, all at once": lambda n=n: eng.wave(n, a.tokens, 0.0),
                "loop, 2 ms apart": lambda n=n: eng.wave(n, a.tokens, 0.002),
                "server JSON, fresh": lambda n=n: (asyncio.run(server_fresh(base, n, a.tokens)), None),
                "server JSON, repeated": lambda n=n: (asyncio.run(server_wave(base, n, a.tokens)), None),
            }
            for run in paths.values():  # untimed: kernels compile per shape
                run()
            rows = {name: [] for name in paths}
            for _ in range(a.rounds):  # interleaved, so each round's ratio compares one state of the card
                for name, run in paths.items():
                    rows[name].append(run())
            raw = [r for r, _ in rows["raw BatchGenerator"]]
            print(f"\n== {a.shape}, {n} streams, {a.tokens} tokens, {a.rounds} rounds", flush=True)
            for name, xs in rows.items():
                rates = [r for r, _ in xs]
                ratios = [r / b for r, b in zip(rates, raw)]
                print(f"{n:>3} {name:<24} {median(rates):8.1f} tok/s  ratio median {median(ratios):.3f}  "
                      f"rounds {[round(x) for x in rates]}", flush=True)
            for name, xs in rows.items():
                if xs[0][1] is None:
                    continue
                order = sorted(range(len(xs)), key=lambda i: xs[i][0])
                rate, tl = xs[order[len(order) // 2]]
                print(f"  {name} (median round, {rate:.1f} tok/s):")
                print(tl.summary(n * a.tokens / rate), flush=True)
                dump[f"{n}/{name}"] = [x[1].events for x in xs]
    finally:
        proc.terminate()
        proc.wait()
        eng.loop.stop()
    if a.out:
        Path(a.out, "timeline.json").write_text(json.dumps(dump))


if __name__ == "__main__":
    main()
