"""Aggregate decode throughput and latency at 1, 2, 4, 8, 16 concurrent streams: mlx_textgen
against mlx-lm's own server (`python -m mlx_lm.server`), same converted model, same requests,
one run.

    .venv/bin/python bench/batching.py [--model PATH] [--tokens 64] [--levels 1,2,4,8,16]

Both servers get the same BLAS (mlx-lm's through LD_PRELOAD) and the same float weights:
the model dir is the one mlx_textgen imported from the GGUF. Requests are greedy, identical
for both, non-streaming; throughput = completion tokens / wall time of the whole wave.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "Count from one to one hundred in words: one, two, three,",
    "List the first fifty prime numbers: 2, 3, 5, 7,",
    "Write the alphabet with a word for each letter: A is for apple, B is for",
    "Describe a walk through a forest in great detail. The path",
]


async def wave(base: str, model: str, n: int, tokens: int) -> tuple[float, list[float], int]:
    async with httpx.AsyncClient(timeout=900) as http:
        async def one(i: int) -> tuple[float, int]:
            body = {"model": model, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": tokens, "temperature": 0}
            t = time.perf_counter()
            r = await http.post(f"{base}/v1/completions", json=body)
            r.raise_for_status()
            return time.perf_counter() - t, r.json()["usage"]["completion_tokens"]

        start = time.perf_counter()
        results = await asyncio.gather(*[one(i) for i in range(n)])
        wall = time.perf_counter() - start
    return wall, [lat for lat, _ in results], sum(c for _, c in results)


def start_mlx_lm(model_dir: Path, port: int, blas: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    if blas:
        env["LD_PRELOAD"] = blas
    cmd = [sys.executable, "-m", "mlx_lm.server", "--model", str(model_dir), "--port", str(port),
           "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).raise_for_status()
            return proc
        except httpx.HTTPError:
            try:
                proc.wait(timeout=0.5)
                raise RuntimeError("mlx_lm.server exited")
            except subprocess.TimeoutExpired:
                pass
    proc.kill()
    raise RuntimeError("mlx_lm.server did not start")


def curve(name: str, base: str, model: str, levels: list[int], tokens: int) -> dict[int, float]:
    asyncio.run(wave(base, model, 1, 4))  # warm-up
    out = {}
    for n in levels:
        try:
            wall, lats, total = asyncio.run(wave(base, model, n, tokens))
        except httpx.HTTPError as exc:  # a server that falls over is a result too
            print(f"{name:<14}{n:>8}  failed: {type(exc).__name__}", flush=True)
            out[n] = float("nan")
            continue
        lats.sort()
        p95 = lats[min(len(lats) - 1, int(round(0.95 * (len(lats) - 1))))]
        out[n] = total / wall
        print(f"{name:<14}{n:>8}{total:>10}{total / wall:>12.1f}{statistics.median(lats):>10.2f}{p95:>10.2f}",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--levels", default="1,2,4,8,16")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    from mlx_textgen.blas import find_system_blas, select_blas

    blas = find_system_blas()
    select_blas("auto")
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.models.default import DEFAULT_MODEL_NAME, default_model_path
    from mlx_textgen.models.loader import prepare
    from tests.e2e.server import ServerProcess, free_port

    path = args.model or default_model_path()
    cache = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    info = prepare(ModelConfig(model_id_or_path=path, model_name=None if args.model else DEFAULT_MODEL_NAME),
                   cache_root=cache)
    print(f"model: {info.name} ({info.model_dir})\nmax_tokens {args.tokens}, greedy; BLAS for both: {blas}")
    print(f"{'server':<14}{'streams':>8}{'tokens':>10}{'tok/s':>12}{'p50 s':>10}{'p95 s':>10}")
    ours = ServerProcess(["--model-path", path, "--model-name", info.name,
                          "--max-running-requests", str(max(levels))], cache)
    try:
        mine = curve("mlx_textgen", ours.base_url, info.name, levels, args.tokens)
    finally:
        ours.stop()
    port = free_port()
    ref = start_mlx_lm(info.model_dir, port, blas)
    try:
        theirs = curve("mlx_lm.server", f"http://127.0.0.1:{port}", str(info.model_dir), levels, args.tokens)
    finally:
        ref.terminate()
        ref.wait()
    print("\nstreams  mlx_textgen/1-stream  mlx_textgen/mlx_lm.server")
    for n in levels:
        print(f"{n:>7}{mine[n] / mine[levels[0]]:>22.2f}{mine[n] / theirs[n]:>27.2f}")


if __name__ == "__main__":
    main()
