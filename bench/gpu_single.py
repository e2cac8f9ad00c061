"""Where one stream's decode speed goes on a GPU, layer by layer, on one model in one run:
mlx-lm's generate_step (main thread, then a worker thread), the engine loop fed in-process
(no HTTP), and the server over HTTP (SSE and JSON).

    python bench/gpu_single.py --shape 1b --tokens 512 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from statistics import median

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_batching import build_model_dir, prompts, raw_single, server_single, start_server  # noqa: E402


def in_thread(fn, *args):
    out = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join()
    return out[0]


class FirstToLast:
    """The engine loop in-process; decode tok/s from its first emitted token to its last."""

    def __init__(self, model_dir: Path) -> None:
        from mlx_textgen.config import ModelConfig
        from mlx_textgen.engine.loop import EngineLoop, LoopOptions

        self.done = threading.Event()
        self.first: float | None = None
        self.tokens = 0
        self.loop = EngineLoop(
            [ModelConfig(str(model_dir), model_name="m")],
            LoopOptions(cache_root=Path("/tmp/bench-cache")),
            self._emit,
        )
        self.loop.start()
        self.loop.ready.wait()
        self.runs = 0

    def _emit(self, outs) -> None:
        for o in outs:
            self.first = self.first or time.perf_counter()
            if o.finished:
                self.tokens = o.completion_tokens
                self.done.set()

    def rate(self, tokens: int) -> float:
        from mlx_textgen.engine.request import Request, SamplingParams

        self.done.clear()
        self.first = None
        self.runs += 1
        params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
        self.loop.submit(Request(f"r{self.runs}", prompts(1)[0], params, "m"))
        self.done.wait()
        return (self.tokens - 1) / (time.perf_counter() - self.first)


def json_rate(base: str, tokens: int) -> float:
    """Non-streamed: completion tokens over the whole request, less a measured first token."""
    body = {"model": "bench", "prompt": prompts(1)[0], "temperature": 0, "ignore_eos": True}
    t = time.perf_counter()
    httpx.post(f"{base}/v1/completions", json=body | {"max_tokens": 1}, timeout=600)
    ttft = time.perf_counter() - t
    t = time.perf_counter()
    r = httpx.post(f"{base}/v1/completions", json=body | {"max_tokens": tokens}, timeout=600)
    n = r.json()["usage"]["completion_tokens"]
    return (n - 1) / (time.perf_counter() - t - ttft)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    import mlx.core as mx

    print("device:", mx.default_device(), flush=True)
    model, model_dir = build_model_dir(a.shape, Path("/tmp/bench-models"))
    proc = start_server(model_dir, 18100, 16)
    base = "http://127.0.0.1:18100"
    eng = FirstToLast(model_dir)
    paths = {
        "generate_step, main thread": lambda: raw_single(model, a.tokens),
        "generate_step, worker thread": lambda: in_thread(raw_single, model, a.tokens),
        "engine loop in-process": lambda: eng.rate(a.tokens),
        "server, SSE": lambda: server_single(base, a.tokens),
        "server, JSON": lambda: json_rate(base, a.tokens),
    }
    rows: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for run in paths.values():  # full-length warm-up: kernels for every context length
            run()
        for _ in range(a.rounds):  # interleaved, so drift in the machine hits every path alike
            for name, run in paths.items():
                rows[name].append(run())
    finally:
        proc.terminate()
        proc.wait()
        eng.loop.stop()
    ref = median(rows["generate_step, main thread"])
    for name, xs in rows.items():
        print(
            f"{name:<30} {median(xs):7.1f} tok/s  {median(xs) / ref:.3f} of generate_step  "
            f"{[round(x) for x in xs]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
