"""Vision requests: mlx-textgen against mlx-vlm's own server on the same model and requests.

One image and a question (cold: an image neither server has seen), then the next turn of
that conversation, each timed as the latency of a 1-token answer (time to first token);
then `--concurrency` image requests at once, each `--max-tokens` long: aggregate decode
tokens/s over the wall time of the burst. Every round uses new images.

    python bench/vision.py --make-random small --out /tmp/vlm-small       # this CPU
    python bench/vision.py --make-random qwen2_5_vl_3b --out /tmp/vlm-3b   # a GPU
    python bench/vision.py --model-dir DIR                                  # a model dir
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
from typing import Any

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.server import free_port
from tests.vision.images import image_url


def start(kind: str, model_dir: Path, port: int, log: Path, trace: Path | None = None) -> subprocess.Popen:
    if kind == "mlx-textgen":
        cmd = [sys.executable, "-m", "mlx_textgen", "serve", "--model-path", str(model_dir),
               "--model-name", "m", "--port", str(port), "--cache-dir", tempfile.mkdtemp()]
    else:
        cmd = [sys.executable, "-m", "mlx_vlm.server", "--model", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if trace is not None:
        env["MLX_TEXTGEN_STEP_TRACE"] = str(trace)
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"{kind} did not start")


def question(seed: int, size: int, text: str) -> list[dict[str, Any]]:
    parts = [{"type": "image_url", "image_url": {"url": image_url(seed, (size, size))}},
             {"type": "text", "text": text}]  # fmt: skip
    return [{"role": "user", "content": parts}]


SENT: dict[str, tuple[float, Any]] = {}  # what -> (time.monotonic when sent, usage), last round


def timed(client: openai.OpenAI, model: str, messages: list[dict[str, Any]], n: int,
          what: str = "") -> tuple[float, str]:  # fmt: skip
    t, sent = time.perf_counter(), time.monotonic()
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=n, temperature=0)
    SENT[what] = (sent, r.usage)
    return time.perf_counter() - t, r.choices[0].message.content or ""


def breakdown(trace: Path) -> None:
    """Where the last round's cold and next-turn requests spent their time, from the
    engine's step trace (engine/trace.py): one clock for every process of the machine."""
    import json

    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    reqs = sorted((r for r in rows if "req" in r), key=lambda r: r["arrival"])
    for what in ("cold", "next"):
        sent, usage = SENT[what]
        r = next((r for r in reqs if r["arrival"] >= sent), None)
        if r is None or r["taken"] is None or r["first"] is None:
            continue
        cached = getattr(usage.prompt_tokens_details, "cached_tokens", None)
        print(f"  {what}: HTTP side {1e3 * (r['arrival'] - sent):.1f} ms, to the engine "
              f"{1e3 * (r['taken'] - r['arrival']):.1f} ms, engine to first token "
              f"{1e3 * (r['first'] - r['taken']):.1f} ms; prompt {usage.prompt_tokens} "
              f"tokens, cached {cached}")  # fmt: skip
        steps = [x for x in rows if "dur" in x and r["taken"] - 0.5 <= x["t"] <= r["first"]]
        phases = {k: sum(x.get(k, 0.0) for x in steps) for k in
                  ("wait", "admit", "prefill", "decode", "deferred", "commit")}  # fmt: skip
        print(f"    {len(steps)} steps: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in phases.items()))


def turns(client: openai.OpenAI, model: str, seed: int, size: int) -> tuple[float, float]:
    """(cold, next-turn) time to first token of one conversation about a new image."""
    first = question(seed, size, "What is in this picture? Describe the colours and shapes.")
    cold, _ = timed(client, model, first, 1, "cold")
    _, answer = timed(client, model, first, 8)  # the turn as the conversation had it
    nxt = [*first, {"role": "assistant", "content": answer or "A picture."},
           {"role": "user", "content": "And what is in its top left corner?"}]  # fmt: skip
    warm, _ = timed(client, model, nxt, 1, "next")
    return cold, warm


async def burst(base: str, model: str, seeds: list[int], size: int, n: int) -> tuple[float, int]:
    client = openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0, timeout=600)
    t = time.perf_counter()
    calls = [client.chat.completions.create(
        model=model, messages=question(s, size, "Tell me a long story about this picture."),
        max_tokens=n, temperature=0) for s in seeds]  # fmt: skip
    results = await asyncio.gather(*calls)
    wall = time.perf_counter() - t
    await client.close()
    return wall, sum(r.usage.completion_tokens for r in results)


def run(kind: str, model_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    log = Path(tempfile.mkdtemp()) / f"{kind}.log"
    trace = log.with_suffix(".trace") if args.trace and kind == "mlx-textgen" else None
    proc = start(kind, model_dir, port, log, trace)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        client = openai.OpenAI(base_url=base, api_key="x", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        timed(client, model, question(10_000, args.image_size, "Warm up."), 2)  # load, compile
        colds, warms, rates = [], [], []
        for r in range(args.rounds):
            cold, warm = turns(client, model, 100 + r, args.image_size)
            colds.append(cold)
            warms.append(warm)
            seeds = [1000 + 10 * r + i for i in range(args.concurrency)]
            wall, tokens = asyncio.run(burst(base, model, seeds, args.image_size, args.max_tokens))
            rates.append(tokens / wall)
        return {"cold": statistics.median(colds), "next": statistics.median(warms),
                "tok_s": statistics.median(rates)}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if trace is not None and trace.exists():
            breakdown(trace)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--make-random", choices=["tiny", "tiny25", "small", "qwen2_5_vl_3b"])
    ap.add_argument("--out", type=Path, help="where --make-random writes the model")
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--servers", default="mlx-textgen,mlx-vlm")
    ap.add_argument("--trace", action="store_true",
                    help="mlx-textgen's step trace: where the cold and next-turn requests went")
    args = ap.parse_args()
    model_dir = args.model_dir
    if args.make_random:
        from tests.vision_model import write_vision_model

        model_dir = args.out or Path(tempfile.mkdtemp()) / args.make_random
        if not (model_dir / "model.safetensors").exists():
            write_vision_model(model_dir, "qwen2_vl", shape=args.make_random)
    if model_dir is None:
        ap.error("give --model-dir or --make-random")
    print(f"model {model_dir}, {args.image_size}px images, {args.concurrency} concurrent x "
          f"{args.max_tokens} tokens, median of {args.rounds} rounds")  # fmt: skip
    print(f"{'server':<12} {'cold ttft s':>12} {'next-turn s':>12} {'next/cold':>10} {'agg tok/s':>10}")
    for kind in args.servers.split(","):
        m = run(kind, model_dir, args)
        print(f"{kind:<12} {m['cold']:>12.3f} {m['next']:>12.3f} {m['next'] / m['cold']:>10.2f} "
              f"{m['tok_s']:>10.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
