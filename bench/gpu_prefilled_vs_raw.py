"""Steady-state decode of mlx-lm's BatchGenerator when it prefills the prompts itself ("raw")
against inserting caches prefilled one sequence at a time ("prefilled"), as the engine does
for forked and lone sequences. Timed from the first generated token on.

    python bench/gpu_prefilled_vs_raw.py 1b 512
"""
import sys, time
sys.path.insert(0, "bench")
from pathlib import Path
from statistics import median
import mlx.core as mx
from gpu_batching import build_model_dir, prompts
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import make_prompt_cache
shape = sys.argv[1] if len(sys.argv) > 1 else "1b"
N, T = 16, int(sys.argv[2]) if len(sys.argv) > 2 else 512
model, d = build_model_dir(shape, Path("/tmp/bench-models"))

def run(mode):
    gen = BatchGenerator(model, completion_batch_size=16, prefill_batch_size=16)
    ps = prompts(N)
    if mode == "raw":
        gen.insert(ps, max_tokens=[T] * N)
    else:
        caches = []
        with mx.stream(gen.stream):
            for p in ps:
                c = make_prompt_cache(model)
                model(mx.array(p[:-1])[None], cache=c)
                mx.eval([x.state for x in c])
                caches.append(c)
        gen.insert([[p[-1]] for p in ps], max_tokens=[T] * N, caches=caches, all_tokens=[p[:-1] for p in ps])
        del caches
    fin = tot = 0; t = None; steps = 0
    while fin < N:
        _, rs = gen.next()
        if rs and t is None:
            t = time.perf_counter(); continue
        tot += len(rs); fin += sum(1 for r in rs if r.finish_reason); steps += 1
    dt = time.perf_counter() - t
    gen.close()
    return tot / dt

run("raw"); run("prefilled")
for mode in ("raw", "prefilled", "raw", "prefilled"):
    print(mode, round(median([run(mode) for _ in range(2)]), 1), flush=True)
