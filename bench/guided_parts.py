"""Where a lone constrained sequence's extra step time goes, part by part, in one process.

    python bench/guided_parts.py [--shape 1b --tokenizer DIR] [--tokens 128] [--rounds 5]

A SoloDecoder (engine/solo.py) on a random model decodes with each hook below; each
round runs every variant once (reversed every other round), and each variant's median
decode step over rounds is printed with the host time of each part of its hook:

  free      no hook
  split     queue the forward pass, read the step's input token: nothing else
  const     split + a device-resident all-allowed packed mask applied (no upload)
  upload    split + an all-allowed packed mask written on the host, uploaded and applied
  view      split + an all-allowed packed mask written in place (guided/rows.py's MaskBuffer)
  bool      split + an all-allowed mask uploaded as V bools, applied with `where`
  json      the served hook (guided/rows.py) with a real JSON-schema constraint, which
            picks its order (device or host) step by step
  json-dev  the served hook held to the device order (forward queued, then the masks)
  json-host the served hook held to the host order (masks written during the dispatch)
  nosplit   the served hook without queuing the forward pass first
"""

from __future__ import annotations

import argparse
import itertools
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
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", default="free,split,const,upload,view,json,json-dev,json-host,nosplit")
    args = ap.parse_args()
    from mlx_textgen.blas import select_blas

    select_blas("auto")
    import mlx.core as mx
    import numpy as np

    from bench.guided import ENDLESS, model_config
    from mlx_textgen import backend
    from mlx_textgen.engine.solo import SoloDecoder
    from mlx_textgen.guided import masks as gmasks
    from mlx_textgen.guided import rows as grows
    from mlx_textgen.guided.compiler import GrammarCache, make_tokenizer
    from mlx_textgen.guided.constraint import GrammarConstraint
    from mlx_textgen.guided.forms import JsonStyle, from_request
    from mlx_textgen.guided.guide import Guide
    from mlx_textgen.models.loader import prepare

    cfg = model_config(args)
    import tempfile

    prepared = prepare(cfg, cache_root=Path(tempfile.gettempdir()) / "mlx_textgen_bench")
    model, _ = backend.load_weights(prepared.model_dir, {})
    tok = prepared.hf_tokenizer
    vocab = model.model.embed_tokens.weight.shape[0] if hasattr(model, "model") else len(tok)
    grammars = GrammarCache(lambda: make_tokenizer(tok, [tok.eos_token_id]))
    grammar = from_request({"guided_json": ENDLESS}, JsonStyle()).grammar
    words = (vocab + 31) // 32
    parts: dict[str, dict[str, list[float]]] = {}

    def clock(variant: str, part: str, t0: float) -> float:
        t = time.perf_counter()
        parts.setdefault(variant, {}).setdefault(part, []).append(t - t0)
        return t

    buffer = gmasks.MaskBuffer(words)
    real_fill, real_accept = GrammarConstraint.fill_mask, GrammarConstraint.accept

    def timed(fn, part):
        def run(self, *a):
            t = time.perf_counter()
            out = fn(self, *a)
            clock(current[0], part, t)
            return out
        return run

    current = ["free"]
    GrammarConstraint.fill_mask = timed(real_fill, "llg-mask")
    GrammarConstraint.accept = timed(real_accept, "llg-accept")
    const_words = mx.array(np.full((1, words), -1, dtype=np.int32))
    mx.eval(const_words)

    def make_hook(name: str, constraint_hook):
        if name == "free":
            return None
        if name.startswith("json") or name == "nosplit":
            rows = constraint_hook

            def hook(uids, tokens, logits):
                t = time.perf_counter()
                out = rows(uids, tokens, logits)
                clock(name, "hook", t)
                return out
            return hook

        def hook(uids, tokens, logits):
            t = time.perf_counter()
            mx.async_eval(logits)
            t = clock(name, "queue", t)
            tokens.tolist()
            t = clock(name, "read", t)
            if name == "split":
                return logits
            if name == "const":
                out = gmasks._select_rows(logits, const_words)
            elif name == "upload":
                host = np.full((1, words), -1, dtype=np.int32)
                out = gmasks._select_rows(logits, mx.array(host))
            elif name == "view":
                buffer.rows(1)
                out = buffer.apply(logits)
            else:  # bool
                allowed = mx.array(np.ones((1, 1, vocab), dtype=np.bool_))
                out = mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))
            clock(name, "apply", t)
            return out
        return hook

    def sampler(key):
        state = {"key": key}

        def sample(logprobs):
            state["key"], sub = mx.random.split(state["key"])
            return mx.random.categorical(logprobs, key=sub)
        return sample

    waves = iter(range(10**6))
    hooks: list = []

    def run(name: str) -> float:
        current[0] = name
        w = next(waves)
        ids = tok.encode(f"Wave {w}: list the items as JSON.")
        cache = backend.make_prompt_cache(model)
        mx.eval(model(mx.array(ids[:-1])[None], cache=cache))
        hook = None
        if name.startswith("json") or name == "nosplit":
            rows = grows.RowMasks(vocab)
            rows.overlap = name != "nosplit"
            if name in ("json-dev", "json-host"):
                rows.host_order = name == "json-host"
                rows._read = lambda tokens: tokens.tolist()  # the order stays as set
            hooks.append((name, rows))
            constraint = GrammarConstraint(grammars.matcher(grammar), grammars.tokenizer.vocab_size)
            rows.attach(0, Guide(constraint), 0)
            hook = make_hook(name, rows)
        else:
            hook = make_hook(name, None)
        dec = SoloDecoder(model, cache, ids, sampler(mx.random.key(w)), [], args.tokens,
                          frozenset(), 0, hook=hook)
        stamps = []
        for _ in range(args.tokens):
            r = dec.step()
            stamps.append(time.perf_counter())
            if r.finish_reason:
                break
        return statistics.median(b - a for a, b in itertools.pairwise(stamps))

    names = args.variants.split(",")
    for name in names:
        run(name)  # warm-up: compiles, allocations
    parts.clear()
    steps: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            steps[name].append(run(name))
    free = statistics.median(steps["free"]) if "free" in steps else None
    for name in names:
        med = statistics.median(steps[name])
        extra = "".join(f"  {p} {statistics.median(v) * 1e6:6.0f} us"
                        for p, v in parts.get(name, {}).items())
        paired = statistics.median(f / x for f, x in zip(steps["free"], steps[name])) if free else 0
        ratio = f"  free/this {free / med:.3f} (paired by round {paired:.3f})" if free else ""
        if name == "json":
            orders = {k: sum(h.orders[k] for n, h in hooks if n == "json") for k in ("device", "host")}
            extra += f"  orders {orders}"
        print(f"{name:9s} median step {med * 1e3:6.3f} ms{ratio}{extra}", flush=True)


if __name__ == "__main__":
    main()
