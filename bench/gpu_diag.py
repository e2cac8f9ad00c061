"""Where a decode step's time goes: generate_step, raw BatchGenerator, the engine loop
in-process (no HTTP), and the server over HTTP with two GIL switch intervals.

    python bench/gpu_diag.py --shape 1b --tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_batching import build_model_dir, prompts, raw_batch, raw_single, server_single, server_wave, start_server  # noqa: E402


def loop_rate(model_dir: Path, n: int, tokens: int) -> float:
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.engine.loop import EngineLoop, LoopOptions
    from mlx_textgen.engine.request import Request, SamplingParams

    done = threading.Event()
    count = {"fin": 0, "tok": 0}

    def emit(outs):
        for o in outs:
            if o.finished:
                count["fin"] += 1
                count["tok"] += o.completion_tokens
        if count["fin"] >= n:
            done.set()

    loop = EngineLoop([ModelConfig(str(model_dir), model_name="m")],
                      LoopOptions(cache_root=Path("/tmp/bench-cache"), max_running_requests=16), emit)
    loop.start()
    loop.ready.wait()
    p = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    for warm in (True, False):
        done.clear()
        count.update(fin=0, tok=0)
        k = 2 if warm else n
        t = time.perf_counter()
        for i, pr in enumerate(prompts(k)):
            loop.submit(Request(f"r{warm}{i}", pr, p, "m"))
        if warm:
            while count["fin"] < k:
                time.sleep(0.01)
        else:
            done.wait()
    rate = count["tok"] / (time.perf_counter() - t)
    loop.stop()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    import mlx.core as mx

    model, model_dir = build_model_dir(args.shape, Path("/tmp/bench-models"))
    raw_batch(model, 2, 8)
    print(f"generate_step 1: {raw_single(model, args.tokens):.1f} tok/s", flush=True)
    for n in (1, 16):
        print(f"raw BatchGenerator {n}: {raw_batch(model, n, args.tokens):.1f} tok/s", flush=True)
    del model
    mx.clear_cache()
    for n in (1, 16):
        print(f"engine loop in-process {n}: {loop_rate(model_dir, n, args.tokens):.1f} tok/s", flush=True)
    for interval in ("0.005", "0.0005"):
        os.environ["MLX_TEXTGEN_SWITCH_INTERVAL"] = interval
        proc = start_server(model_dir, 18100, 16)
        base = "http://127.0.0.1:18100"
        try:
            asyncio.run(server_wave(base, 2, 8))
            single = server_single(base, args.tokens)
            w1 = asyncio.run(server_wave(base, 1, args.tokens))
            w16 = asyncio.run(server_wave(base, 16, args.tokens))
            print(f"server switchinterval {interval}: 1-stream decode {single:.1f}, wave1 {w1:.1f}, "
                  f"wave16 {w16:.1f} tok/s", flush=True)
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
