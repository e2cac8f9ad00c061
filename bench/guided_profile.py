"""Where a constrained decode step's extra time goes: each part of the guide switched off in turn.

    python bench/guided_profile.py [--shape 1b --tokenizer DIR] [--levels 1,16] [--tokens 96]

Variants, all with the same JSON schema as bench/guided.py's decode: `free` (no constraint),
`json` (as served: the batch's rows masked at once by the decode hook, guided/rows.py),
`perrow` (each constrained row its own mlx-lm logits processor, the previous design),
`ones` (the matcher neither advances nor computes masks: an all-allowed mask is applied,
which costs what applying a mask costs), `skip` (no mask applied: only the hook's
bookkeeping), `nohook` (the hook returns the logits untouched: what the loop's guide
bookkeeping costs). `nosplit`: as served but the forward pass is not queued
before the masks are computed. Also llguidance's mask time per sequence (median, in `json`).
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
    ap.add_argument("--variants", default="free,json,nosplit,perrow,ones")
    args = ap.parse_args()
    from mlx_textgen.blas import select_blas

    select_blas("auto")
    import queue
    import tempfile

    from bench.guided import ENDLESS, model_config
    from mlx_textgen.engine.loop import EngineLoop, LoopOptions
    from mlx_textgen.engine.request import Request, SamplingParams
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
    from mlx_textgen.engine.guiding import Guides
    from mlx_textgen.guided import masks as gmasks
    from mlx_textgen.guided import rows as grows

    real = (GrammarConstraint.fill_mask, GrammarConstraint.accept, gmasks._select_rows,
            grows.RowMasks.__call__, Guides.attach, EngineLoop._sampling,
            grows.RowMasks.overlap)
    fills: list[float] = []

    def timed(fn, into):
        def run(*a):
            t = time.perf_counter()
            out = fn(*a)
            into.append(time.perf_counter() - t)
            return out
        return run

    def per_row_sampling(self, seq):  # each constrained row its own mlx-lm logits processor
        sampler, procs = real[5](self, seq)
        return (sampler, [*procs, PerRow(seq.guide)]) if seq.guide else (sampler, procs)

    class PerRow:
        """The previous design, rebuilt for comparison: the guide as a per-row processor."""

        def __init__(self, guide):
            self.rows = grows.RowMasks(lp._loaded.vocab_size)
            self.rows.attach(0, guide, 0)

        def __call__(self, context, logits):
            return real[3](self.rows, [0], context[-1:], logits[:, None])[:, 0]

    def variant(name: str) -> None:
        (GrammarConstraint.fill_mask, GrammarConstraint.accept, gmasks._select_rows,
         grows.RowMasks.__call__, Guides.attach, EngineLoop._sampling,
         grows.RowMasks.overlap) = real
        if name in ("ones", "skip"):  # the matcher neither advances nor computes masks
            GrammarConstraint.accept = lambda self, token: None

            def fill(self, words):
                words.fill(-1)
                return True
            GrammarConstraint.fill_mask = fill
        if name == "nohook":  # the guide's bookkeeping in the loop, no hook at all
            grows.RowMasks.__call__ = lambda self, uids, tokens, logits: logits
            GrammarConstraint.accept = lambda self, token: None  # free tokens: don't fail
        if name == "skip":
            gmasks._select_rows = lambda logits, words: logits
        if name == "nosplit":
            grows.RowMasks.overlap = False
        if name == "perrow":
            Guides.attach = lambda *a: None
            EngineLoop._sampling = per_row_sampling
        if name == "json":
            GrammarConstraint.fill_mask = timed(real[0], fills)

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

    names = args.variants.split(",")
    for n in levels:
        for name in names:
            wave(n, name)
        rows: dict[str, list[float]] = {k: [] for k in names}
        fills.clear()
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                rows[name].append(wave(n, name))
        line = "  ".join(f"{k} {statistics.median(v) * 1e3:6.2f}" for k, v in rows.items())
        paired = "  ".join(  # each round's free step over its own, then the median over rounds
            f"{k} {statistics.median(f / x for f, x in zip(rows['free'], v)):.3f}"
            for k, v in rows.items() if k != "free") if "free" in rows else ""
        rm = lp._guides._rows.get("m")
        print(f"streams={n:2d} median step ms: {line}   free/variant, paired by round: {paired}"
              f"   llguidance mask {statistics.median(fills or [0]) * 1e6:.0f} us per sequence"
              f" (median)   hook orders {rm.orders if rm else {}}", flush=True)
        if rm:
            rm.orders = {"device": 0, "host": 0}
    lp.stop()


if __name__ == "__main__":
    main()
