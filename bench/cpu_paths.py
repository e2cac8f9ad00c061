"""Decode and prefill speed of each CPU path: {bundled reference BLAS, OpenBLAS} x
{weights as stored (quantized), float32}, each in its own process (the BLAS is per process).

    .venv/bin/python bench/cpu_paths.py [--model PATH] [--prompt-tokens 256] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(model_path: str, cache: str, blas: str, weights: str, n_prompt: int, n_gen: int) -> dict:
    from mlx_textgen.blas import select_blas

    loaded = select_blas(blas)
    import mlx.core as mx

    from mlx_textgen import backend
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.models.loader import load_weights, prepare

    info = prepare(ModelConfig(model_id_or_path=model_path), cache_root=Path(cache), cpu_weights=weights)
    model = load_weights(info)
    prompt = mx.array(([1000, 2000, 3000, 4000] * n_prompt)[:n_prompt])
    for _ in backend.generate_step(prompt[:16], model, max_tokens=4):  # warm-up
        pass
    start = time.perf_counter()
    first = None
    for i, _ in enumerate(backend.generate_step(prompt, model, max_tokens=n_gen)):
        if i == 0:
            first = time.perf_counter()
    end = time.perf_counter()
    return {"blas": "OpenBLAS" if loaded else "bundled reference", "weights": weights,
            "prefill_tok_s": n_prompt / (first - start), "decode_tok_s": (n_gen - 1) / (end - first)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--one", nargs=2, metavar=("BLAS", "WEIGHTS"), help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from mlx_textgen.models.default import default_model_path

    model = args.model or default_model_path()
    if args.one:
        print(json.dumps(measure(model, args.cache, *args.one, args.prompt_tokens, args.tokens)))
        return
    cache = tempfile.mkdtemp(prefix="bench-cpu-")
    print(f"model: {model}\nprompt {args.prompt_tokens} tokens, decode {args.tokens} tokens")
    print(f"{'BLAS':<20}{'weights':<10}{'prefill tok/s':>15}{'decode tok/s':>15}")
    for blas in ("off", "auto"):
        for weights in ("native", "float"):
            cmd = [sys.executable, __file__, "--model", model, "--one", blas, weights, "--cache", cache,
                   "--prompt-tokens", str(args.prompt_tokens), "--tokens", str(args.tokens)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{r['blas']:<20}{r['weights']:<10}{r['prefill_tok_s']:>15.1f}{r['decode_tok_s']:>15.1f}")


if __name__ == "__main__":
    main()
