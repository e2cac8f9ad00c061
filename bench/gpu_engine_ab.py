"""Which difference between the server and raw BatchGenerator costs batched throughput on a
GPU: the weights (built in memory, or loaded from safetensors as the server loads them),
how the batch is formed (all at once, one prompt prefilled alone and merged, one prompt
joining per step), the thread (main or worker), or the prompt cache (RAM and disk tiers,
RAM only, off).

    python bench/gpu_engine_ab.py --shape 8b --streams 16 --tokens 256 --rounds 3

All paths are interleaved (every other round reversed); ratios are medians of per-round
ratios to raw BatchGenerator on in-memory weights on the main thread. For the raw paths
the median decode step (one `next()` at full batch) is printed too: it separates the
model's own step time from arrival and HTTP effects.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_batching import (  # noqa: E402
    build_model_dir,
    interleave,
    prompts,
    quiesce,
    ratio,
    server_wave,
    start_server,
)

STEPS: dict[str, list[float]] = {}  # path -> full-batch step times of its last wave


def raw_wave(name: str, model, n: int, tokens: int, thread: bool = False) -> float:
    """Raw BatchGenerator given every prompt at once, on this thread or a worker thread."""
    if not thread:
        return formed_wave(name, model, n, tokens, "all")
    out: list[float] = []
    t = threading.Thread(target=lambda: out.append(formed_wave(name, model, n, tokens, "all")))
    t.start()
    t.join()
    return out[0]


def formed_wave(name: str, model, n: int, tokens: int, how: str) -> float:
    """Raw BatchGenerator with the batch formed `all` at once, or as the server forms it:
    `merged`, the first prompt prefilled alone and merged in one step after the others (as
    the engine does when requests arrive together); `staggered`, one prompt joining per
    step (HTTP arrivals)."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.models.cache import make_prompt_cache

    gen = BatchGenerator(model, completion_batch_size=max(n, 16), prefill_batch_size=max(n, 16))
    ps = prompts(n)
    start = time.perf_counter()
    total, finished, steps = 0, 0, []

    def step() -> None:
        nonlocal total, finished
        s = time.perf_counter()
        _, rs = gen.next()
        if len(rs) == n:
            steps.append(time.perf_counter() - s)
        total += len(rs)
        finished += sum(1 for r in rs if r.finish_reason)

    if how == "merged":
        cache = make_prompt_cache(model)
        model(mx.array(ps[0][:-1])[None], cache=cache)
        mx.eval([c.state for c in cache])
        gen.insert(ps[1:], max_tokens=[tokens] * (n - 1))
        step()
        gen.insert([ps[0][-1:]], max_tokens=[tokens], caches=[cache], all_tokens=[ps[0][:-1]])
    elif how == "all":
        gen.insert(ps, max_tokens=[tokens] * n)
    else:
        for p in ps:
            gen.insert([p], max_tokens=[tokens])
            step()
    while finished < n:
        step()
    STEPS[name] = steps
    gen.close()
    return total / (time.perf_counter() - start)


def loaded_weights(model_dir: Path):
    """The model as the server loads it."""
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.models.loader import load_weights, prepare

    info = prepare(ModelConfig(str(model_dir), model_name="bench"), cache_root=Path("/tmp/bench-ab"))
    return load_weights(info)


def server_without_cache(model_dir: Path, port: int, running: int) -> subprocess.Popen:
    cfg = Path("/tmp/bench-ab/no-cache.yaml")
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"model_configs:\n- model_id_or_path: {model_dir}\n  model_name: bench\n"
                   "  enable_cache: false\n")
    cmd = [sys.executable, "-m", "mlx_textgen", "serve", "-cf", str(cfg), "--port", str(port),
           "--max-running-requests", str(running), "--cache-dir", "/tmp/bench-ab/nc",
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    from gpu_batching import wait_healthy

    wait_healthy(proc, port)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b")
    ap.add_argument("--streams", default="16")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default="disk,ram,off", help="which servers: disk, ram, off")
    ap.add_argument("--no-loaded", action="store_true", help="skip the raw path on loaded weights")
    ap.add_argument("--worker", action="store_true", help="add raw on a worker thread")
    ap.add_argument("--aa", action="store_true", help="raw twice, to see the noise of a ratio")
    ap.add_argument("--no-formed", action="store_true", help="skip the merged/staggered raw paths")
    a = ap.parse_args()
    import mlx.core as mx

    print("device:", mx.default_device(), flush=True)
    levels = [int(x) for x in a.streams.split(",")]
    model, model_dir = build_model_dir(a.shape, Path("/tmp/bench-models"))
    loaded = None if a.no_loaded else loaded_weights(model_dir)
    procs, bases = [], {}
    try:
        kinds = a.servers.split(",") if a.servers else []
        for i, kind in enumerate(kinds):
            port = 18300 + i
            if kind == "off":
                procs.append(server_without_cache(model_dir, port, max(levels)))
            else:
                extra = ("--cache-disk-gb", "0") if kind == "ram" else ()
                procs.append(start_server(model_dir, port, max(levels), *extra))
            bases[kind] = f"http://127.0.0.1:{port}"
        for n in levels:
            paths = {"raw": lambda n=n: raw_wave("raw", model, n, a.tokens)}
            if a.aa:
                paths["raw, again"] = lambda n=n: raw_wave("raw, again", model, n, a.tokens)
            for how in () if a.no_formed else ("merged", "staggered"):
                label = f"raw, {how}"
                paths[label] = lambda n=n, how=how, label=label: formed_wave(label, model, n, a.tokens, how)
            if a.worker:
                paths["raw, worker thread"] = lambda n=n: raw_wave("raw, worker thread", model, n, a.tokens, True)
            if loaded is not None:
                paths["raw, loaded weights"] = lambda n=n: raw_wave("raw, loaded weights", loaded, n, a.tokens)
            for kind, base in bases.items():
                def served(base=base, n=n) -> float:
                    quiesce(base)
                    return asyncio.run(server_wave(base, n, a.tokens))
                paths[f"server JSON, cache {kind}"] = served
            rows = interleave(paths, a.rounds)
            print(f"\n== {a.shape}, {n} streams, {a.tokens} tokens, {a.rounds} rounds", flush=True)
            for name, xs in rows.items():
                m, lo, hi = ratio(rows, name)
                step = f"  step {median(STEPS[name]) * 1e3:6.2f} ms" if name in STEPS else ""
                print(f"{n:>3} {name:<26} {median(xs):8.1f} tok/s  {m:.3f} ({lo:.2f}-{hi:.2f})"
                      f"{step}  rounds {[round(x) for x in xs]}", flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
