"""Where batched throughput goes on a GPU: raw BatchGenerator, the engine loop in-process
(requests all at once, or staggered as HTTP delivers them), and the server over HTTP.

    python bench/gpu_diag.py --shape 1b --streams 16 --tokens 512 --rounds 3
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
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    import mlx.core as mx

    model, model_dir = build_model_dir(a.shape, Path("/tmp/bench-models"))
    raw_batch(model, 2, 8)
    raw = [raw_batch(model, a.streams, a.tokens) for _ in range(a.rounds)]
    print(f"raw BatchGenerator: {median(raw):.1f} tok/s {[round(x) for x in raw]}", flush=True)
    del model
    mx.clear_cache()
    eng = InProcess(model_dir)
    eng.rate(2, 8, 0)
    for stagger in (0.0, 0.002):
        r = [eng.rate(a.streams, a.tokens, stagger) for _ in range(a.rounds)]
        print(f"engine loop, stagger {stagger * 1000:.0f} ms: {median(r):.1f} tok/s {[round(x) for x in r]}", flush=True)
    eng.loop.stop()
    proc = start_server(model_dir, 18100, 16)
    try:
        asyncio.run(server_wave("http://127.0.0.1:18100", 2, 8))
        r = [asyncio.run(server_wave("http://127.0.0.1:18100", a.streams, a.tokens)) for _ in range(a.rounds)]
        print(f"server (HTTP): {median(r):.1f} tok/s {[round(x) for x in r]}", flush=True)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
