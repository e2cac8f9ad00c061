"""Continuous batching on a GPU: the server against mlx-lm's raw BatchGenerator (and, at one
stream, against mlx-lm's single-sequence generate_step), on randomly initialised models of
Llama-3.2-1B's and Llama-3.1-8B's shapes in bf16, created on the device. EOS is ignored;
the weights don't matter for speed.

    python bench/gpu_batching.py --shapes 1b,8b --levels 1,2,4,8,16 --tokens 128 [--out DIR]
        [--trace] [--variants default,nocache]

--trace turns on the engine's step trace (MLX_TEXTGEN_STEP_TRACE) and prints, for every
server wave, where its wall time went (bench/wave_trace.py). --variants adds servers with
the prompt cache's disk tier off (ramonly) or the whole prompt cache off (nocache).

Both sides are timed the same way: from submitting the wave to its last token (the server's
client keeps its connections open between waves, as an application's client does), with short
(32-token) prompts never seen before (no prompt-cache hits), so the figure is dominated by
decode. Paths are interleaved, in reversed order every other round, and each round's ratio
compares paths that saw the same state of the machine; the reported ratio is the median
of those. Before every wave the server is idle: its prompt-cache commits of the previous
wave are done (they run after a wave's last token, so they would otherwise land in the
next path's time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, intermediate_size=256, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),  # a CPU smoke test
    "1b": dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=8192, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}
VOCAB = 128256
PROMPT_LEN = 32


def build_model_dir(shape: str, root: Path):
    """A loadable model dir: random bf16 llama weights, config and a word-level tokenizer."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from tokenizers import Tokenizer, models

    cfg = dict(model_type="llama", vocab_size=VOCAB, rms_norm_eps=1e-5, rope_theta=500000.0,
               max_position_embeddings=131072, **SHAPES[shape])
    model = llama.Model(llama.ModelArgs.from_dict(cfg))
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    out = root / shape
    out.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    shard, size, index = {}, 0, 0
    for name, w in weights.items():  # ~4 GB shards
        shard[name] = w
        size += w.nbytes
        if size > 4 << 30:
            mx.save_safetensors(str(out / f"model-{index:05d}.safetensors"), shard)
            shard, size, index = {}, 0, index + 1
    if shard:
        mx.save_safetensors(str(out / f"model-{index:05d}.safetensors"), shard)
    (out / "config.json").write_text(json.dumps(cfg | {"torch_dtype": "bfloat16"}))
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "t1", "bos_token": "t0"}))
    return model, out


_waves = iter(range(10**9))


def prompts(n: int) -> list[list[int]]:
    """n prompts no earlier wave used."""
    rng = random.Random(next(_waves))
    return [[rng.randrange(2, VOCAB) for _ in range(PROMPT_LEN)] for _ in range(n)]


def raw_single(model, tokens: int) -> float:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    first = None
    for i, _ in enumerate(generate_step(mx.array(prompts(1)[0]), model, max_tokens=tokens)):
        if i == 0:
            first = time.perf_counter()
    return (tokens - 1) / (time.perf_counter() - first)


def raw_batch_thread(model, n: int, tokens: int) -> float:
    """raw_batch on a worker thread, as the engine runs it."""
    out = []
    t = threading.Thread(target=lambda: out.append(raw_batch(model, n, tokens)))
    t.start()
    t.join()
    return out[0]


RAW_STEPS: list[int] = []  # next() calls of each raw_batch wave, in order
RAW_STEP_MS: list[float] = []  # median next() of each raw_batch wave at full batch


def mask_rule(on: bool) -> None:
    """Raw paths run mlx-lm as shipped, or (on) with the server's decode-mask rule
    (mlx_textgen.backend drops the batch decode mask where no row is left-padded)."""
    from mlx_lm.models.cache import BatchKVCache

    from mlx_textgen import backend  # noqa: F401  (importing it installs the rule)

    rule = BatchKVCache.make_mask
    shipped = getattr(rule, "__wrapped__", rule)
    BatchKVCache.make_mask = backend._decode_mask_only_when_padded(shipped) if on else shipped


def raw_batch_nomask(model, n: int, tokens: int) -> float:
    mask_rule(True)
    try:
        return raw_batch(model, n, tokens, keep_rule=True)
    finally:
        mask_rule(False)


def raw_batch(model, n: int, tokens: int, keep_rule: bool = False) -> float:
    from mlx_lm.generate import BatchGenerator

    if not keep_rule:
        mask_rule(False)

    gen = BatchGenerator(model, completion_batch_size=max(n, 16), prefill_batch_size=max(n, 16))
    start = time.perf_counter()
    gen.insert(prompts(n), max_tokens=[tokens] * n)
    total, finished, steps, full = 0, 0, 0, []
    while finished < n:
        t = time.perf_counter()
        _, rs = gen.next()
        if len(rs) == n:
            full.append(time.perf_counter() - t)
        steps += 1
        total += len(rs)
        finished += sum(1 for r in rs if r.finish_reason)
    wall = time.perf_counter() - start
    gen.close()
    RAW_STEPS.append(steps)
    if full:
        RAW_STEP_MS.append(sorted(full)[len(full) // 2] * 1e3)
    return total / wall


def quiesce(base: str) -> dict:
    """Returns once the engine has nothing left to do (an admin call runs after its commits),
    with the engine's counters as of then (/health `stats`)."""
    httpx.get(f"{base}/v1/cache", timeout=600).raise_for_status()
    return httpx.get(f"{base}/health", timeout=60).json()["stats"]


async def server_wave(base: str, n: int, tokens: int, stream: bool = False,
                      http: httpx.AsyncClient | None = None) -> float:
    """n requests at once; aggregate tok/s from sending them to the last token. With `http`
    (a client whose pool already holds n open connections, as an application's client
    would) the figure leaves out connection setup; without, a new client opens them."""
    if http is None:
        async with httpx.AsyncClient(timeout=600) as fresh:
            return await server_wave(base, n, tokens, stream, fresh)
    body = {"model": "bench", "max_tokens": tokens, "temperature": 0, "ignore_eos": True}

    async def one(p: list[int]) -> int:
        if not stream:
            r = await http.post(f"{base}/v1/completions", json=body | {"prompt": p})
            return r.json()["usage"]["completion_tokens"]
        return await streamed_tokens(http, f"{base}/v1/completions", body | {"prompt": p})

    global LAST_WAVE
    t0, start = time.monotonic(), time.perf_counter()
    counts = await asyncio.gather(*[one(p) for p in prompts(n)])
    rate = sum(counts) / (time.perf_counter() - start)
    LAST_WAVE = (t0, time.monotonic())
    return rate


LAST_WAVE: tuple[float, float] | None = None  # the timed window of the last server_wave (monotonic)


_LOOP = asyncio.new_event_loop()  # one event loop and one client per server, across waves
_CLIENTS: dict[str, httpx.AsyncClient] = {}


def warm_wave(base: str, n: int, tokens: int, stream: bool = False) -> float:
    """server_wave over a kept client, its n connections opened (untimed) just before."""
    async def go() -> float:
        http = _CLIENTS.get(base)
        if http is None:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            http = _CLIENTS[base] = httpx.AsyncClient(timeout=600, limits=limits)
        await asyncio.gather(*[http.get(f"{base}/health") for _ in range(n)])
        return await server_wave(base, n, tokens, stream, http)

    return _LOOP.run_until_complete(go())


async def streamed_tokens(http: httpx.AsyncClient, url: str, body: dict, marks: list | None = None) -> int:
    """Stream one request; the tokens it got, from the usage chunk (a chunk can carry several
    tokens when the client falls behind, so chunks are not tokens). `marks` gets the time of
    the first chunk and the tokens it carried."""
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    got = 0
    async with http.stream("POST", url, json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                got = chunk["usage"]["completion_tokens"]
            elif marks is not None and not marks:
                marks.append(time.perf_counter())
    return got


def server_single(base: str, tokens: int) -> float:
    """Decode tok/s after the first token, through the streaming API (as raw_single)."""
    body = {"model": "bench", "prompt": prompts(1)[0], "max_tokens": tokens, "temperature": 0,
            "ignore_eos": True}

    async def one() -> float:
        marks: list[float] = []
        async with httpx.AsyncClient(timeout=600) as http:
            got = await streamed_tokens(http, f"{base}/v1/completions", body, marks)
        return (got - 1) / (time.perf_counter() - marks[0])

    return asyncio.run(one())


VARIANTS = {"default": (), "ramonly": ("--cache-disk-gb", "0"),
            "nocache": ("--cache-disk-gb", "0", "--cache-ram-gb", "0")}


def start_server(model_dir: Path, port: int, max_running: int, *extra: str,
                 trace: Path | None = None) -> subprocess.Popen:
    import os

    cmd = [sys.executable, "-m", "mlx_textgen", "serve", "--model-path", str(model_dir), "--model-name",
           "bench", "--port", str(port), "--max-running-requests", str(max_running),
           "--cache-dir", "/tmp/bench-cache", "--log-level", "warning", *extra]
    env = dict(os.environ)
    if trace is not None:
        trace.unlink(missing_ok=True)
        env["MLX_TEXTGEN_STEP_TRACE"] = str(trace)
    proc = subprocess.Popen(cmd, env=env)
    wait_healthy(proc, port)
    return proc


def wait_healthy(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


def run_shape(shape: str, levels: list[int], tokens: int, port: int, rounds: int,
              thread_ab: bool = False, aa: bool = False, trace_dir: Path | None = None,
              variants: tuple[str, ...] = ("default",), raw_nomask: bool = False) -> dict:
    """Raw and server rounds interleaved, so both see the same machine; medians reported."""
    from statistics import median

    import wave_trace

    t = time.perf_counter()
    model, model_dir = build_model_dir(shape, Path("/tmp/bench-models"))
    print(f"[{shape}] built and saved in {time.perf_counter() - t:.0f}s", flush=True)
    procs, bases, traces = [], {}, {}
    engine: dict = {}  # (level, path) -> per wave: wall seconds and the engine's counter deltas
    windows: dict = {}  # (level, path) -> per wave: (start, end) on time.monotonic

    def served(base, fn, key=None):
        def run():
            global LAST_WAVE
            before = quiesce(base)
            t0, start = time.monotonic(), time.perf_counter()
            LAST_WAVE = None
            rate = fn()
            wall = time.perf_counter() - start
            windows.setdefault(key, []).append(LAST_WAVE or (t0, time.monotonic()))
            if key is not None:
                after = quiesce(base)
                engine.setdefault(key, []).append(
                    {"wall": wall} | {k: after[k] - before[k] for k in after})
            return rate
        return run

    try:
        for i, v in enumerate(variants):
            traces[v] = trace_dir / f"trace-{shape}-{v}.jsonl" if trace_dir else None
            procs.append(start_server(model_dir, port + 10 * i, max(levels), *VARIANTS[v], trace=traces[v]))
            bases[v] = f"http://127.0.0.1:{port + 10 * i}"
        base = bases[variants[0]]
        # Every measurement is preceded by an untimed one of the same size: MLX compiles
        # kernels per shape on first use (on CUDA, tens to hundreds of ms each).
        single = {"raw": lambda: raw_single(model, tokens),
                  "server": served(base, lambda: server_single(base, tokens))}
        res = {"shape": shape, "levels": {}}
        res["single"] = interleave(single, rounds)
        for n in levels:
            paths = {"raw": lambda n=n: raw_batch(model, n, tokens)}
            for v, b in bases.items():
                sfx = "" if v == "default" else f"_{v}"
                paths["server" + sfx] = served(b, lambda n=n, b=b: warm_wave(b, n, tokens),
                                               (n, "server" + sfx))
                if v == "default":
                    paths["server_stream"] = served(
                        b, lambda n=n, b=b: warm_wave(b, n, tokens, stream=True),
                        (n, "server_stream"))
            if thread_ab:
                paths["raw_thread"] = lambda n=n: raw_batch_thread(model, n, tokens)
            if aa:
                paths["raw_again"] = lambda n=n: raw_batch(model, n, tokens)
            if raw_nomask:
                paths["raw_nomask"] = lambda n=n: raw_batch_nomask(model, n, tokens)
            del RAW_STEPS[:], RAW_STEP_MS[:]
            res["levels"][n] = interleave(paths, rounds)
            res.setdefault("raw_steps", {})[n] = sorted(RAW_STEPS)[len(RAW_STEPS) // 2]
            res.setdefault("raw_step_ms", {})[n] = median(RAW_STEP_MS) if RAW_STEP_MS else None
            for name in paths:
                if name.startswith("server"):
                    res.setdefault("engine", {}).setdefault(n, {})[name] = engine.get((n, name), [])
            print(f"[{shape}] {n} streams: " + ", ".join(
                f"{k} {median(v):.1f}" for k, v in res["levels"][n].items()), flush=True)
        for b in bases.values():
            quiesce(b)  # idle engines have written their traces
    finally:
        for p in procs:
            p.terminate()
            p.wait()
    if trace_dir is not None:
        for v, path in traces.items():
            rows = wave_trace.load(path)
            sfx = "" if v == "default" else f"_{v}"
            for key, ws in windows.items():
                if key is None:
                    continue
                n, name = key
                if not (name == "server" + sfx or (v == "default" and name == "server_stream")):
                    continue
                # the first wave of each kind is the untimed warm-up
                res.setdefault("trace", {}).setdefault(n, {})[name] = [
                    wave_trace.breakdown(rows, a, b) for a, b in ws[1:]]
    mx_clear()
    return res


def interleave(paths: dict, rounds: int) -> dict[str, list[float]]:
    """One untimed warm-up of each path, then `rounds` rounds, every other one reversed."""
    for run in paths.values():
        run()
    rows: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            rows[name].append(paths[name]())
    return rows


def ratio(rows: dict[str, list[float]], name: str, ref: str = "raw") -> tuple[float, float, float]:
    """Median, lowest and highest of the per-round ratios name/ref."""
    from statistics import median

    r = [a / b for a, b in zip(rows[name], rows[ref])]
    return median(r), min(r), max(r)


def mx_clear() -> None:
    import mlx.core as mx

    mx.clear_cache()


def report(res: dict) -> None:
    from statistics import median

    s, one = res["shape"], res["single"]
    m, lo, hi = ratio(one, "server")
    print(f"\n[{s}] 1 stream decode: generate_step {median(one['raw']):.1f} tok/s, server (SSE) "
          f"{median(one['server']):.1f} tok/s, ratio {m:.3f} (rounds {lo:.3f}-{hi:.3f})")
    print(f"[{s}] {'streams':>7} {'raw BatchGenerator':>20} {'server':>10} {'ratio (range)':>20}"
          f" {'server (SSE)':>13} {'ratio (range)':>20}")
    for n, r in res["levels"].items():
        cells = []
        for k in ("server", "server_stream"):
            m, lo, hi = ratio(r, k)
            cells.append(f"{median(r[k]):>10.1f} {m:>7.3f} ({lo:.2f}-{hi:.2f})")
        extra = ""
        if "raw_thread" in r:
            m, lo, hi = ratio(r, "raw_thread")
            extra = f"  raw on a worker thread {m:.3f} ({lo:.2f}-{hi:.2f})"
        if "raw_again" in r:
            m, lo, hi = ratio(r, "raw_again")
            extra += f"  raw again (noise) {m:.3f} ({lo:.2f}-{hi:.2f})"
        if "raw_nomask" in r:
            m, lo, hi = ratio(r, "raw_nomask")
            extra += f"  raw, mask rule {median(r['raw_nomask']):.1f} {m:.3f} ({lo:.2f}-{hi:.2f})"
        for k in r:
            if k.startswith("server_") and k != "server_stream":
                m, lo, hi = ratio(r, k)
                extra += f"  {k} {median(r[k]):.1f} {m:.3f} ({lo:.2f}-{hi:.2f})"
        print(f"[{s}] {n:>7} {median(r['raw']):>20.1f} {cells[0]}   {cells[1]}{extra}", flush=True)
    # Where a server wave's wall time went, engine side (medians over its waves): busy is
    # every loop iteration that had work; outside is the rest (HTTP, arrival, the pipe).
    print(f"[{s}] server waves, engine side: wall | busy (decode steps x ms, prefill, cache) | "
          "outside the engine; raw BatchGenerator's steps for comparison")
    for n, by_path in res.get("engine", {}).items():
        for name, waves in by_path.items():
            if not waves:
                continue
            def med(k: str) -> float:
                return median(w[k] for w in waves)
            steps = med("decode_steps")
            per_step = median(w["decode_seconds"] / max(1, w["decode_steps"]) for w in waves)
            print(f"[{s}] {n:>3} {name:<13} {med('wall'):6.2f} s | {med('busy_seconds'):6.2f} s "
                  f"({steps:.0f} x {per_step * 1e3:.2f} ms, {med('prefill_seconds'):.2f} s, "
                  f"{med('cache_seconds'):.2f} s) | {med('wall') - med('busy_seconds'):5.2f} s; "
                  f"raw {res['raw_steps'][n]} steps; steps over 30/100/300 ms: "
                  f"{med('decode_steps_over_30ms'):.0f}/{med('decode_steps_over_100ms'):.0f}/"
                  f"{med('decode_steps_over_300ms'):.0f}", flush=True)
    if res.get("trace"):
        import wave_trace

        print(f"[{s}] step trace per server wave (medians); raw's median full-batch step for comparison")
        for n, by_path in res["trace"].items():
            raw_ms = res.get("raw_step_ms", {}).get(n)
            for name, waves in by_path.items():
                print(f"[{s}] {n:>3} {name:<15} {wave_trace.summarize(waves)}"
                      f" | raw step {raw_ms or float('nan'):.2f} ms", flush=True)
            worst = max((w for ws in by_path.values() for w in ws), key=lambda w: w["wall"], default=None)
            if worst:
                print(f"[{s}] {n:>3} slowest wave's slowest iterations: {worst['slowest']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1b,8b")
    ap.add_argument("--levels", default="1,2,4,8,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--thread-ab", action="store_true", help="also time raw BatchGenerator on a worker thread")
    ap.add_argument("--aa", action="store_true", help="raw BatchGenerator twice: the noise of a ratio")
    ap.add_argument("--trace", action="store_true", help="the engine's step trace, per server wave")
    ap.add_argument("--raw-nomask", action="store_true",
                    help="also raw BatchGenerator with the server's decode-mask rule")
    ap.add_argument("--variants", default="default", help="servers: default, ramonly, nocache")
    args = ap.parse_args()
    from mlx_textgen.blas import select_blas

    select_blas("auto")  # the same BLAS as the server's on a CPU; nothing to do on a GPU
    import mlx.core as mx

    print("device:", mx.default_device(), flush=True)
    levels = [int(x) for x in args.levels.split(",")]
    results = []
    for shape in args.shapes.split(","):
        trace_dir = Path(args.out or "/tmp/bench-trace") if args.trace else None
        if trace_dir:
            trace_dir.mkdir(parents=True, exist_ok=True)
        results.append(run_shape(shape, levels, args.tokens, 18000 + 100 * len(results), args.rounds,
                                 args.thread_ab, args.aa, trace_dir, tuple(args.variants.split(",")),
                                 args.raw_nomask))
        report(results[-1])
    if args.out:
        Path(args.out, "gpu_batching.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
