"""Two models behind one endpoint: alternation cost, swap vs load time, memory after unload.

    .venv/bin/python bench/multi_model.py [--requests 20] [--tokens 8]

Models: SmolLM2-135M-Instruct from its GGUF ("a") and the MLX dir mlx_textgen imported
from it ("b"): same size, two models to the server. Two clients, each sending its requests
one after another (greedy, `--tokens` tokens):
- single:   both clients on model a only (the baseline);
- resident: --max-loaded-models 2, client 1 alternates a, b, a, ... and client 2 b, a, b, ...;
- swapping: the same with --max-loaded-models 1 (a load on each change of model).
Then: the time of POST /v1/models/b/load with room (a plain load) and with a resident
idle (a swap: unload a + load b); and memory (RSS of the server and its engine processes,
MLX active/cache per engine) with a alone, with a and b, and after b's unload.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.server import ServerProcess  # noqa: E402

MB = 1e6


def configs(gguf: str, model_dir: Path, **server) -> dict:
    return {"model_configs": [{"model_id_or_path": gguf, "model_name": "a"},
                              {"model_id_or_path": str(model_dir), "model_name": "b"}],
            "log_level": "warning", **server}  # fmt: skip


def start(cfg: dict, cache: Path) -> ServerProcess:
    path = Path(tempfile.mkdtemp()) / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ServerProcess(["--config-file", str(path)], cache)


async def clients(base: str, orders: list[list[str]], tokens: int) -> float:
    async with httpx.AsyncClient(timeout=900) as http:
        async def run(order: list[str]) -> None:
            for i, model in enumerate(order):
                body = {"model": model, "prompt": f"Say number {i}:", "max_tokens": tokens,
                        "temperature": 0, "ignore_eos": True}  # fmt: skip
                r = await http.post(f"{base}/v1/completions", json=body)
                r.raise_for_status()

        began = time.perf_counter()
        await asyncio.gather(*(run(o) for o in orders))
        return time.perf_counter() - began


def rss(pid: int | None) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, TypeError):
        return 0


def memory(srv: ServerProcess) -> dict[str, float]:
    h = httpx.get(f"{srv.base_url}/health", params={"memory": "true"}, timeout=60).json()
    engines = [m for m in h["models"].values() if m["engine_pid"]]
    return {"http_rss": rss(srv.proc.pid) / MB,
            "engines_rss": sum(rss(m["engine_pid"]) for m in engines) / MB,
            "mlx_active": sum(m["memory"]["mlx_active_bytes"] for m in engines) / MB,
            "mlx_cache": sum(m["memory"]["mlx_cache_bytes"] for m in engines) / MB}  # fmt: skip


def timed_post(url: str) -> float:
    began = time.perf_counter()
    httpx.post(url, timeout=900).raise_for_status()
    return time.perf_counter() - began


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--memory-only", action="store_true", help="skip the timed runs")
    args = ap.parse_args()
    from mlx_textgen.models.default import default_model_path
    from mlx_textgen.models.gguf import import_gguf

    cache = Path(tempfile.mkdtemp(prefix="mlx_textgen-bench-"))
    gguf = default_model_path()
    model_dir = import_gguf(Path(gguf), cache, float_weights=True, progress=False)
    n = args.requests
    alt1 = ["a" if i % 2 == 0 else "b" for i in range(n)]
    alt2 = ["b" if i % 2 == 0 else "a" for i in range(n)]
    print(f"{n} requests per client, {args.tokens} tokens each, 2 clients")

    srv = start(configs(gguf, model_dir, max_loaded_models=2), cache)
    try:
        httpx.post(f"{srv.base_url}/v1/completions", timeout=300,
                   json={"model": "a", "prompt": "warm", "max_tokens": 2}).raise_for_status()
        if args.memory_only:
            n = 2
            alt1, alt2 = alt1[:n], alt2[:n]
        single = asyncio.run(clients(srv.base_url, [["a"] * n, ["a"] * n], args.tokens))
        print(f"single model     : {single:7.2f} s")
        before = memory(srv)
        load = timed_post(f"{srv.base_url}/v1/models/b/load")
        resident = asyncio.run(clients(srv.base_url, [alt1, alt2], args.tokens))
        print(f"both resident    : {resident:7.2f} s  ({resident / single:.2f}x single)")
        during = memory(srv)
        timed_post(f"{srv.base_url}/v1/models/b/unload")
        after = memory(srv)
    finally:
        srv.stop()

    srv = start(configs(gguf, model_dir, max_loaded_models=1, model_wait_timeout=600), cache)
    try:
        if args.memory_only:
            alt1, alt2 = alt1[:2], alt2[:2]
        swapping = asyncio.run(clients(srv.base_url, [alt1, alt2], args.tokens))
        print(f"one at a time    : {swapping:7.2f} s  ({swapping / single:.2f}x single)")
        swap = timed_post(f"{srv.base_url}/v1/models/b/load")  # a is idle: unload a, load b
        loads = httpx.get(f"{srv.base_url}/health").json()["models"]
        print(f"loads while swapping: a {loads['a']['loads']}, b {loads['b']['loads']}")
    finally:
        srv.stop()

    print(f"plain load of b  : {load:7.2f} s")
    print(f"swap a -> b      : {swap:7.2f} s")
    print(f"{'memory, MB':18}{'http rss':>10}{'engines rss':>13}{'mlx active':>12}{'mlx cache':>11}{'total rss':>11}")
    for label, m in (("a alone", before), ("a + b", during), ("after b unload", after)):
        print(f"{label:18}{m['http_rss']:10.0f}{m['engines_rss']:13.0f}{m['mlx_active']:12.0f}"
              f"{m['mlx_cache']:11.0f}{m['http_rss'] + m['engines_rss']:11.0f}")
    total = lambda m: m["http_rss"] + m["engines_rss"]  # noqa: E731
    print(f"after unload vs a alone: {100 * (total(after) / total(before) - 1):+.1f}% total RSS")
    subprocess.run(["rm", "-rf", str(cache)], check=False)


if __name__ == "__main__":
    main()
