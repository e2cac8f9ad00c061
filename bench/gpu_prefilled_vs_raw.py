"""Steady-state decode of mlx-lm's BatchGenerator when it prefills the prompts itself ("raw")
against inserting caches prefilled one sequence at a time ("prefilled"), as the engine does
for forked and lone sequences. Timed from the first generated token on.

    python bench/gpu_prefilled_vs_raw.py [shape=1b] [tokens=512]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
from gpu_batching import build_model_dir, prompts  # noqa: E402
from mlx_lm.generate import BatchGenerator  # noqa: E402
from mlx_lm.models.cache import make_prompt_cache  # noqa: E402

STREAMS = 16


def insert_prefilled(model, gen: BatchGenerator, ps: list[list[int]], tokens: int) -> None:
    caches = []
    with mx.stream(gen.stream):
        for p in ps:
            cache = make_prompt_cache(model)
            model(mx.array(p[:-1])[None], cache=cache)
            mx.eval([c.state for c in cache])
            caches.append(cache)
    gen.insert([[p[-1]] for p in ps], max_tokens=[tokens] * len(ps), caches=caches,
               all_tokens=[p[:-1] for p in ps])


def steady_rate(model, mode: str, tokens: int) -> float:
    gen = BatchGenerator(model, completion_batch_size=STREAMS, prefill_batch_size=STREAMS)
    ps = prompts(STREAMS)
    if mode == "raw":
        gen.insert(ps, max_tokens=[tokens] * STREAMS)
    else:
        insert_prefilled(model, gen, ps, tokens)
    finished = total = 0
    start = None
    while finished < STREAMS:
        _, responses = gen.next()
        if responses and start is None:
            start = time.perf_counter()
            continue
        total += len(responses)
        finished += sum(1 for r in responses if r.finish_reason)
    rate = total / (time.perf_counter() - start)
    gen.close()
    return rate


def main() -> None:
    shape = sys.argv[1] if len(sys.argv) > 1 else "1b"
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    model, _ = build_model_dir(shape, Path("/tmp/bench-models"))
    steady_rate(model, "raw", 8)  # warm-up
    steady_rate(model, "prefilled", 8)
    for mode in ("raw", "prefilled", "raw", "prefilled"):
        print(mode, round(median(steady_rate(model, mode, tokens) for _ in range(2)), 1), flush=True)


if __name__ == "__main__":
    main()
