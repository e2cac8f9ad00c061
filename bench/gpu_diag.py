"""Where batched throughput goes on a GPU: raw BatchGenerator, the engine loop in-process
(requests all at once, or staggered as HTTP delivers them), and the server over HTTP.

    python bench/gpu_diag.py --shape 1b --streams 4,16 --tokens 256 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_batching import build_model_dir, prompts, raw_batch, server_wave, start_server  # noqa: E402


class InProcess:
    """The engine loop on its own thread, fed directly (no HTTP, no asyncio)."""

    def __init__(self, model_dir: Path) -> None:
        from mlx_textgen.config import ModelConfig
        from mlx_textgen.engine.loop import EngineLoop, LoopOptions

        self.done = threading.Event()
        self.count = {"fin": 0, "tok": 0, "want": 0}
        self.loop = EngineLoop([ModelConfig(str(model_dir), model_name="m")],
                               LoopOptions(cache_root=Path("/tmp/bench-cache"), max_running_requests=16),
                               self._emit)
        self.loop.start()
        self.loop.ready.wait()
        self.runs = 0

    def _emit(self, outs) -> None:
        for o in outs:
            if o.finished:
                self.count["fin"] += 1
                self.count["tok"] += o.completion_tokens
        if self.count["fin"] >= self.count["want"]:
            self.done.set()

    def rate(self, n: int, tokens: int, stagger: float) -> float:
        from mlx_textgen.engine.request import Request, SamplingParams

        p = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
        self.done.clear()
        self.count.update(fin=0, tok=0, want=n)
        self.runs += 1
        t = time.perf_counter()
        for i, pr in enumerate(prompts(n)):
            self.loop.submit(Request(f"r{self.runs}-{i}", pr, p, "m"))
            if stagger:
                time.sleep(stagger)
        self.done.wait()
        return self.count["tok"] / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--streams", default="4,16")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()

    model, model_dir = build_model_dir(a.shape, Path("/tmp/bench-models"))
    proc = start_server(model_dir, 18100, 16)
    base = "http://127.0.0.1:18100"
    eng = InProcess(model_dir)
    try:
        for n in (int(x) for x in a.streams.split(",")):
            paths = {
                "raw BatchGenerator": lambda n=n: raw_batch(model, n, a.tokens),
                "engine loop, all at once": lambda n=n: eng.rate(n, a.tokens, 0.0),
                "engine loop, 2 ms apart": lambda n=n: eng.rate(n, a.tokens, 0.002),
                "server JSON": lambda n=n: asyncio.run(server_wave(base, n, a.tokens)),
                "server SSE": lambda n=n: asyncio.run(server_wave(base, n, a.tokens, stream=True)),
            }
            for run in paths.values():  # untimed: kernels compile per shape
                run()
            rows = {name: [] for name in paths}
            for _ in range(a.rounds):  # interleaved
                for name, run in paths.items():
                    rows[name].append(run())
            ref = median(rows["raw BatchGenerator"])
            for name, xs in rows.items():
                print(f"{n:>3} streams  {name:<26} {median(xs):8.1f} tok/s  {median(xs) / ref:.3f}  "
                      f"{[round(x) for x in xs]}", flush=True)
    finally:
        proc.terminate()
        proc.wait()
        eng.loop.stop()


if __name__ == "__main__":
    main()
