"""The agentic prompt-cache trace on a GPU: three 8,000-token system prompts in rotation,
each request with its own 30-token user message, on a randomly initialised model of
Llama-3.2-1B's shape (bf16, built on the device). Prompts are token ids (the random model
has no chat template), so the cache keeps prompt and completion ends as boundaries.

    python bench/gpu_agent_trace.py [--system-tokens 8000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_batching import VOCAB, build_model_dir  # noqa: E402


def ids(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(2, VOCAB) for _ in range(n)]


def request(base: str, prompt: list[int]) -> dict:
    body = {"model": "bench", "prompt": prompt, "max_tokens": 8, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first, usage = None, None
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                ev = json.loads(line[6:])
                if ev.get("choices") and first is None:
                    first = time.perf_counter()
                usage = ev.get("usage") or usage
    return {"ttft": first - t0, "prompt": usage["prompt_tokens"],
            "cached": usage["prompt_tokens_details"]["cached_tokens"]}


def serve(model_dir: Path, cache_dir: str, port: int, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlx_textgen", "serve", "--model-path", str(model_dir), "--model-name",
           "bench", "--port", str(port), "--cache-dir", cache_dir, "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError("server did not start")


def run(base: str, systems: list[list[int]], rounds: int) -> list[dict]:
    out = []
    for r in range(rounds):
        for s, sysp in enumerate(systems):
            rec = request(base, sysp + ids(1000 + 10 * r + s, 30))
            rec["floor"] = 30 if r > 0 else len(sysp) + 30
            out.append(rec)
    return out


def report(name: str, recs: list[dict], short: float) -> None:
    computed = sum(r["prompt"] - r["cached"] for r in recs)
    floor = sum(r["floor"] for r in recs)
    hits = [r["ttft"] for r in recs if r["cached"] > r["prompt"] // 2]
    misses = [r["ttft"] for r in recs if r["cached"] <= r["prompt"] // 2]
    m = lambda xs: statistics.mean(xs) if xs else float("nan")  # noqa: E731
    print(f"{name:<22} computed {computed:>6} floor {floor:>6} ratio {computed / floor:.3f} | "
          f"hits {len(hits)} ttft {m(hits) * 1000:.1f} ms | misses {len(misses)} ttft {m(misses) * 1000:.1f} ms | "
          f"30-token prompt ttft {short * 1000:.1f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system-tokens", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shape", default="1b")
    a = ap.parse_args()
    import mlx.core as mx

    print("device:", mx.default_device(), flush=True)
    _, model_dir = build_model_dir(a.shape, Path("/tmp/bench-models"))
    systems = [ids(s, a.system_tokens) for s in range(3)]
    for name, extra, cache_dir in (("mlx_textgen (cache)", [], "/tmp/trace-cache"),
                                   ("mlx_textgen (no cache)", ["--cache-ram-gb", "0", "--cache-disk-gb", "0"], "/tmp/trace-nocache")):
        proc = serve(model_dir, cache_dir, 18200, extra)
        try:
            base = "http://127.0.0.1:18200"
            request(base, ids(7, 64))  # warm-up
            short = statistics.median(request(base, ids(9 + i, 30))["ttft"] for i in range(3))
            report(name, run(base, systems, a.rounds), short)
        finally:
            proc.terminate()
            proc.wait()
    proc = serve(model_dir, "/tmp/trace-cache", 18200, [])
    try:
        base = "http://127.0.0.1:18200"
        request(base, ids(7, 64))
        cold = request(base, ids(4242, a.system_tokens + 30))
        hit = request(base, systems[0] + ids(555, 30))
        print(f"after restart: cached {hit['cached']} of {hit['prompt']} tokens, ttft {hit['ttft'] * 1000:.1f} ms; "
              f"a cold prompt of the same length {cold['ttft'] * 1000:.1f} ms "
              f"({hit['ttft'] / cold['ttft']:.1%} of cold)", flush=True)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
