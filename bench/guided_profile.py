"""Where a constrained decode step's extra time goes: each part of the guide switched off in turn.

    python bench/guided_profile.py [--shape 1b --tokenizer DIR] [--levels 1,16] [--tokens 96]

Variants, all with the same JSON schema as bench/guided.py's decode: `free` (no constraint),
`json` (as served), `ones` (the matcher neither advances nor computes masks: an all-allowed
mask is applied, which costs what applying a mask costs), `skip` (no mask at all: only the
guide's bookkeeping and the batch's per-row path). Also, per guide call, the host time of
the whole call and of llguidance's mask (medians, in `json`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape")
    ap.add_argument("--tokenizer")
    ap.add_argument("--model")
    ap.add_argument("--levels", default="1,16")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from mlx_textgen.blas import select_blas

    select_blas("auto")
    import queue
    import tempfile

    from bench.guided import ENDLESS, model_config
    from mlx_textgen.engine.loop import EngineLoop, LoopOptions
    from mlx_textgen.engine.request import Request, SamplingParams
    from mlx_textgen.guided import mask as gmask
    from mlx_textgen.guided.constraint import GrammarConstraint
    from mlx_textgen.guided.forms import JsonStyle, from_request

    levels = [int(x) for x in args.levels.split(",")]
    outs: queue.SimpleQueue = queue.SimpleQueue()
    lp = EngineLoop([model_config(args)], LoopOptions(
        cache_root=Path(tempfile.gettempdir()) / "mlx_textgen_bench", prompt_cache=None,
        max_running_requests=max(levels)), lambda batch: outs.put((time.perf_counter(), batch)))
    lp.start()
    lp.ready.wait()
    assert lp.startup_error is None, lp.startup_error
    grammar = from_request({"guided_json": ENDLESS}, JsonStyle()).grammar
    tok = lp.models["m"].hf_tokenizer
    real_fill, real_apply, real_call = GrammarConstraint.fill_mask, gmask.apply_bitmask, gmask.Guide.__call__
    real_accept = GrammarConstraint.accept
    host: list[float] = []
    fills: list[float] = []

    def timed(fn, into):
        def run(*a):
            t = time.perf_counter()
            out = fn(*a)
            into.append(time.perf_counter() - t)
            return out
        return run

    def timed_call(self, context, logits):
        t = time.perf_counter()
        out = real_call(self, context, logits)
        host.append(time.perf_counter() - t)
        return out

    def variant(name: str) -> None:
        GrammarConstraint.fill_mask = real_fill
        GrammarConstraint.accept = real_accept
        gmask.apply_bitmask = real_apply
        if name in ("ones", "skip"):  # the matcher neither advances nor computes masks
            GrammarConstraint.accept = lambda self, token: None

            def fill(self, words):
                words.fill(-1)
                return name == "ones"
            GrammarConstraint.fill_mask = fill
        gmask.Guide.__call__ = timed_call
        GrammarConstraint.fill_mask = timed(GrammarConstraint.fill_mask, fills) if name == "json" else GrammarConstraint.fill_mask

    waves = iter(range(10**6))

    def wave(n: int, name: str) -> float:
        variant(name)
        w = next(waves)
        for i in range(n):
            ids = tok.encode(f"Wave {w} stream {i}: list the items as JSON.")
            params = SamplingParams(max_tokens=args.tokens, temperature=1.0, seed=i, ignore_eos=True,
                                    grammar=None if name == "free" else grammar)
            lp.submit(Request(f"w{w}-{i}", ids, params, "m"))
        done, stamps = 0, []
        while done < n:
            t, batch = outs.get(timeout=600)
            if any(o.token_ids for o in batch):
                stamps.append(t)
            done += sum(o.finished for o in batch)
            for o in batch:
                assert o.error is None, (name, o.error)
        return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))

    names = ["free", "json", "ones", "skip"]
    for n in levels:
        for name in names:
            wave(n, name)
        rows: dict[str, list[float]] = {k: [] for k in names}
        host.clear()
        fills.clear()
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                rows[name].append(wave(n, name))
        line = "  ".join(f"{k} {statistics.median(v) * 1e3:6.2f}" for k, v in rows.items())
        print(f"streams={n:2d} median step ms: {line}   guide call median {statistics.median(host) * 1e6:.0f} us"
              f" (p90 {sorted(host)[int(len(host) * 0.9)] * 1e6:.0f} us), llguidance mask median"
              f" {statistics.median(fills or [0]) * 1e6:.0f} us", flush=True)
    lp.stop()


if __name__ == "__main__":
    main()
