"""Greedy output alone against batched, token by token, over long generations: where (if
anywhere) floating-point batching changes a token.

    .venv/bin/python bench/batch_consistency.py [--tokens 128] [--model PATH]
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "The capital of France is",
    "Write a story about a dragon who learns to cook. Once upon a time",
    "def quicksort(arr):",
    "List the planets of the solar system in order:",
    "Explain photosynthesis to a child. " * 12,
    "1, 1, 2, 3, 5, 8,",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    from mlx_textgen.blas import select_blas

    select_blas("auto")
    from mlx_textgen.config import ModelConfig
    from mlx_textgen.engine.loop import EngineLoop, LoopOptions
    from mlx_textgen.engine.request import Request, SamplingParams
    from mlx_textgen.models.default import default_model_path

    outs: queue.SimpleQueue = queue.SimpleQueue()
    loop = EngineLoop([ModelConfig(args.model or default_model_path(), model_name="m")],
                      LoopOptions(cache_root=Path(tempfile.mkdtemp()), max_running_requests=16),
                      lambda batch: [outs.put(o) for o in batch])
    loop.start()
    loop.ready.wait()
    tok = loop.models["m"].hf_tokenizer
    params = SamplingParams(max_tokens=args.tokens, temperature=0, ignore_eos=True)

    def run(ids: list[str]) -> dict[str, list[int]]:
        got: dict[str, list[int]] = {i: [] for i in ids}
        left = set(ids)
        for i in ids:
            loop.submit(Request(i, tok.encode(PROMPTS[int(i.split("-")[1])]), params, "m"))
        while left:
            o = outs.get()
            got[o.request_id] += o.token_ids
            if o.finished:
                left.discard(o.request_id)
        return got

    alone = {k: v for i in range(len(PROMPTS)) for k, v in run([f"a-{i}"]).items()}
    together = run([f"b-{i}" for i in range(len(PROMPTS))])
    loop.stop()
    print(f"{len(PROMPTS)} prompts, {args.tokens} greedy tokens each, alone vs all in one batch")
    for i in range(len(PROMPTS)):
        a, b = alone[f"a-{i}"], together[f"b-{i}"]
        first = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
        where = "identical" if first is None else f"first difference at token {first}"
        print(f"  prompt {i} ({len(tok.encode(PROMPTS[i]))} tokens): {where}")


if __name__ == "__main__":
    main()
