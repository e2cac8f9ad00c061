"""Single-stream decode speed and time to first token: the server against mlx-lm's raw
`generate_step` on the same model and prompt, measured in one run, reported as a ratio.

    .venv/bin/python bench/decode_speed.py [--model PATH] [--tokens 128] [--rounds 3]

With no --model it uses the embedded default (SmolLM2-135M-Instruct GGUF). The raw side
loads the same imported model dir the server uses, with the same BLAS and weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_textgen.blas import select_blas  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def raw_run(model, tokenizer, prompt_ids: list[int], n: int) -> tuple[float, float]:
    """(ttft seconds, decode tok/s after the first token) for mlx-lm's generate_step."""
    import mlx.core as mx

    from mlx_textgen import backend

    start = time.perf_counter()
    first = None
    count = 0
    for _tok, _ in backend.generate_step(mx.array(prompt_ids), model, max_tokens=n):
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return first - start, (count - 1) / (end - first)


def server_run(base_url: str, model: str, prompt_ids: list[int], n: int) -> tuple[float, float]:
    """(ttft seconds, decode tok/s after the first token) through the streaming API."""
    import httpx

    body = {"model": model, "prompt": prompt_ids, "max_tokens": n, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = None
    tokens = 0
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, timeout=600) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event["choices"] and first is None:
                first = time.perf_counter()
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    end = time.perf_counter()
    return first - start, (tokens - 1) / (end - first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    select_blas("auto")
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.models.default import DEFAULT_MODEL_NAME, default_model_path
    from mlx_textgen.models.loader import load_weights, prepare
    from tests.e2e.server import ServerProcess

    path = args.model or default_model_path()
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    mc = ModelConfig(model_id_or_path=path, model_name=DEFAULT_MODEL_NAME if not args.model else None)
    info = prepare(mc, cache_root=cache)
    model = load_weights(info)
    prompt_ids = info.hf_tokenizer.encode(PROMPT)
    server = ServerProcess(["--model-path", path, "--model-name", info.name], cache)
    try:
        raw_run(model, info.tokenizer, prompt_ids, 8)  # warm-up
        server_run(server.base_url, info.name, prompt_ids, 8)
        raw, srv = [], []
        for _ in range(args.rounds):
            raw.append(raw_run(model, info.tokenizer, prompt_ids, args.tokens))
            srv.append(server_run(server.base_url, info.name, prompt_ids, args.tokens))
    finally:
        server.stop()
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    print(f"model: {info.name}  prompt: {len(prompt_ids)} tokens  decode: {args.tokens} tokens  rounds: {args.rounds}")
    print(f"raw generate_step : ttft {med(raw, 0) * 1000:7.1f} ms   decode {med(raw, 1):7.2f} tok/s")
    print(f"mlx_textgen server: ttft {med(srv, 0) * 1000:7.1f} ms   decode {med(srv, 1):7.2f} tok/s")
    print(f"server/raw decode ratio: {med(srv, 1) / med(raw, 1):.3f}")


if __name__ == "__main__":
    main()
