"""Structured output's cost: decode speed constrained vs unconstrained, compile time, TTFT.

    python bench/guided.py decode  [--model PATH | --shape 1b [--tokenizer DIR]] [--levels 1,8]
                                   [--tokens 64] [--rounds 3]
    python bench/guided.py compile
    python bench/guided.py ttft    [--requests 8]

decode: the engine loop in this process, waves of N streams with the same prompt length
and output length (EOS ignored; the schema can't complete within the budget, so every
constrained sequence decodes all its tokens under the mask). Paths alternate, in reversed
order every other round. Reported: the median decode step time (the gaps between the
engine's per-step outputs: robust to a noisy machine) and tokens/s, each path's median
over rounds, and constrained/unconstrained ratios. `--shape 1b` builds a random model of
Llama-3.2-1B's shape with SmolLM2's tokenizer (a JSON grammar needs a real vocabulary).

compile: a 60-property schema with nested $defs through the grammar cache: first compile,
then cached (what a request pays once the schema was seen).

ttft: the real server; time to first token of a constrained request against an
unconstrained one with the same prompt, after the schema was compiled once.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Never completes within a bench's budget: every constrained token decodes under the mask.
ENDLESS = {"type": "object", "properties": {"items": {"type": "array", "minItems": 500, "items": {
    "type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                     "qty": {"type": "integer"}, "ok": {"type": "boolean"}},
    "required": ["name", "qty", "ok"], "additionalProperties": False}}},
    "required": ["items"], "additionalProperties": False}


def large_schema() -> dict:
    defs = {f"Part{i}": {"type": "object", "properties": {
        "id": {"type": "integer"}, "label": {"type": "string", "maxLength": 30},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        "child": {"anyOf": [{"$ref": f"#/$defs/Part{(i + 1) % 6}"}, {"type": "null"}]}},
        "required": ["id", "label"], "additionalProperties": False} for i in range(6)}
    props = {}
    for i in range(60):
        kind = i % 5
        props[f"field_{i}"] = (
            {"type": "string", "maxLength": 40} if kind == 0 else
            {"type": "integer", "minimum": 0, "maximum": 1000} if kind == 1 else
            {"enum": ["a", "b", "c", f"v{i}"]} if kind == 2 else
            {"$ref": f"#/$defs/Part{i % 6}"} if kind == 3 else
            {"type": "array", "items": {"type": "number"}, "maxItems": 5})
    return {"$defs": defs, "type": "object", "properties": props,
            "required": list(props)[:30], "additionalProperties": False}


def model_config(args):
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.models.default import default_model_path

    if args.shape:
        return ModelConfig(str(random_model(args.shape, args.tokenizer)), model_name="m")
    return ModelConfig(args.model or default_model_path(), model_name="m")


def random_model(shape: str, tokenizer_dir: str | None) -> Path:
    """A random Llama of `shape` (bench/gpu_batching.py's shapes) with SmolLM2's tokenizer
    (from `tokenizer_dir`, else imported from the default model's GGUF)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    from bench.gpu_batching import SHAPES
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.models.default import default_model_path
    from mlx_textgen.models.loader import prepare

    out = Path(tempfile.gettempdir()) / f"mlx_textgen_guided_{shape}"
    if (out / "config.json").exists():
        return out
    if tokenizer_dir:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        cache = Path(tempfile.gettempdir()) / "mlx_textgen_bench"
        hf = prepare(ModelConfig(default_model_path()), cache_root=cache).hf_tokenizer
    vocab = len(hf)
    cfg = dict(model_type="llama", vocab_size=vocab, rms_norm_eps=1e-5, rope_theta=500000.0,
               max_position_embeddings=8192, **SHAPES[shape])
    model = llama.Model(llama.ModelArgs.from_dict(cfg))
    model.set_dtype(mx.bfloat16)
    mx.eval(model.parameters())
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(cfg | {"torch_dtype": "bfloat16"}))
    hf.save_pretrained(str(out))
    return out


def decode(args) -> None:
    from mlx_textgen.engine.loop import EngineLoop, LoopOptions
    from mlx_textgen.engine.request import Request, SamplingParams
    from mlx_textgen.guided.forms import JsonStyle, from_request

    outs: queue.SimpleQueue = queue.SimpleQueue()
    levels = [int(x) for x in args.levels.split(",")]
    lp = EngineLoop([model_config(args)], LoopOptions(
        cache_root=Path(tempfile.gettempdir()) / "mlx_textgen_bench", prompt_cache=None,
        max_running_requests=max(levels)), lambda batch: outs.put((time.perf_counter(), batch)))
    lp.start()
    lp.ready.wait()
    assert lp.startup_error is None, lp.startup_error
    grammar = from_request({"guided_json": ENDLESS}, JsonStyle()).grammar
    tok = lp.models["m"].hf_tokenizer
    waves = iter(range(10**6))

    def wave(n: int, constrained: bool) -> tuple[float, float]:
        w = next(waves)
        for i in range(n):
            ids = tok.encode(f"Wave {w} stream {i}: list the items as JSON.")
            params = SamplingParams(max_tokens=args.tokens, temperature=1.0, seed=i, ignore_eos=True,
                                    grammar=grammar if constrained else None)
            lp.submit(Request(f"w{w}-{i}", ids, params, "m"))
        done, stamps, tokens = 0, [], 0
        while done < n:
            t, batch = outs.get(timeout=600)
            if any(o.token_ids for o in batch):
                stamps.append(t)
            tokens += sum(len(o.token_ids) for o in batch)
            done += sum(o.finished for o in batch)
        steps = [b - a for a, b in zip(stamps, stamps[1:])]
        return statistics.median(steps), tokens / (stamps[-1] - stamps[0])

    for n in levels:
        wave(n, False), wave(n, True)  # warm every shape first
        rows: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for r in range(args.rounds):
            for constrained in ((False, True) if r % 2 == 0 else (True, False)):
                rows[constrained].append(wave(n, constrained))
        free = [statistics.median(x[k] for x in rows[False]) for k in (0, 1)]
        cons = [statistics.median(x[k] for x in rows[True]) for k in (0, 1)]
        print(f"streams={n:2d}  median step: free {free[0] * 1e3:7.2f} ms  json {cons[0] * 1e3:7.2f} ms"
              f"  (free/json {free[0] / cons[0]:.3f})   tok/s: free {free[1]:7.1f}  json {cons[1]:7.1f}"
              f"  (json/free {cons[1] / free[1]:.3f})", flush=True)
    lp.stop()


def compile_time(_args) -> None:
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.guided.compiler import GrammarCache, make_tokenizer
    from mlx_textgen.guided.forms import JsonStyle, from_request
    from mlx_textgen.models.default import default_model_path
    from mlx_textgen.models.loader import prepare

    info = prepare(ModelConfig(default_model_path()), cache_root=Path(tempfile.gettempdir()) / "mlx_textgen_bench")
    t = time.perf_counter()
    tokenizer = make_tokenizer(info.hf_tokenizer, info.eos_token_ids)
    print(f"tokenizer for llguidance: {(time.perf_counter() - t) * 1e3:.0f} ms (once per model and process)")
    schema = large_schema()
    cache = GrammarCache(lambda: tokenizer)
    t = time.perf_counter()
    grammar = from_request({"guided_json": schema}, JsonStyle()).grammar
    t_forms = time.perf_counter() - t
    t = time.perf_counter()
    cache.check(grammar)
    first = time.perf_counter() - t
    cached = []
    for _ in range(200):
        t = time.perf_counter()
        g = from_request({"guided_json": schema}, JsonStyle()).grammar
        cache.check(g)
        cache.matcher(g)
        cached.append(time.perf_counter() - t)
    print(f"large schema ({len(schema['properties'])} properties, {len(schema['$defs'])} $defs): "
          f"to grammar {t_forms * 1e3:.2f} ms, first compile {first * 1e3:.1f} ms, "
          f"cached (grammar + lookup + fresh matcher) median {statistics.median(cached) * 1e3:.3f} ms")


def ttft(args) -> None:
    import httpx

    from tests.e2e.server import ServerProcess

    schema = large_schema()
    with tempfile.TemporaryDirectory() as d:
        server = ServerProcess(["--cache-ram-gb", "0", "--cache-disk-gb", "0"], Path(d))
        try:
            client = httpx.Client(base_url=server.base_url + "/v1", timeout=120)

            def first_token(extra: dict, i: int) -> float:
                body = {"messages": [{"role": "user", "content": f"Request {i}: describe a part."}],
                        "max_tokens": 1, "temperature": 0} | extra
                t = time.perf_counter()
                r = client.post("/chat/completions", json=body)
                r.raise_for_status()
                return time.perf_counter() - t

            first_token({"guided_json": schema}, -1)  # compiles it in both processes
            free, cons = [], []
            for i in range(args.requests):
                free.append(first_token({}, i))
                cons.append(first_token({"guided_json": schema}, i))
            f, c = statistics.median(free), statistics.median(cons)
            print(f"TTFT (1 token, large schema compiled once): free {f * 1e3:.1f} ms, "
                  f"constrained {c * 1e3:.1f} ms, difference {(c - f) * 1e3:+.1f} ms")
        finally:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["decode", "compile", "ttft"])
    ap.add_argument("--model")
    ap.add_argument("--shape")
    ap.add_argument("--tokenizer", help="a tokenizer dir for --shape (default: SmolLM2's)")
    ap.add_argument("--levels", default="1,8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=8)
    args = ap.parse_args()
    from mlx_textgen.blas import select_blas

    select_blas("auto")
    {"decode": decode, "compile": compile_time, "ttft": ttft}[args.part](args)


if __name__ == "__main__":
    main()
