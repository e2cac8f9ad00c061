"""Where a server wave's wall time went, from the engine's step trace (MLX_TEXTGEN_STEP_TRACE).

A wave is timed by the client from `start` to `end` (time.monotonic, the trace's clock).
From the engine's records of that window this reports: when the last request had been
made by the HTTP process (intake) and taken by the engine, when every sequence had its
first token, when the engine sent the last token, the client's tail after that, and the
engine's iterations: how many decoded, their median and total seconds, how many admitted
joins, and the seconds of each phase.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_textgen.engine.trace import PHASES  # noqa: E402


def load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def breakdown(rows: list[dict], start: float, end: float) -> dict:
    """The wave's figures, in seconds from `start` (see the module doc)."""
    reqs = [r for r in rows if "req" in r and start - 1e-3 <= r["arrival"] <= end]
    steps = [r for r in rows if "t" in r and start <= r["t"] <= end]
    decoding = [s for s in steps if "decode" in s]
    out = {"wall": end - start, "requests": len(reqs), "iterations": len(steps),
           "decode_steps": len(decoding)}
    if reqs:
        out["intake"] = max(r["arrival"] for r in reqs) - start
        out["taken"] = max(r["taken"] or r["arrival"] for r in reqs) - start
        firsts = [r["first"] for r in reqs if r["first"] is not None]
        out["all_first"] = (max(firsts) - start) if firsts else None
        out["engine_end"] = max(r["end"] for r in reqs) - start
        out["tail"] = end - max(r["end"] for r in reqs)
    if decoding:
        out["decode_median_ms"] = median(s["decode"] for s in decoding) * 1e3
        full = max(s.get("running", 0) for s in decoding)
        at_full = [s["decode"] for s in decoding if s.get("running", 0) == full]
        out["full_batch"] = full
        out["full_median_ms"] = median(at_full) * 1e3
    out["joins"] = sum(1 for s in steps if s.get("joined"))
    out["waited"] = sum(s["wait"] for s in steps[1:])
    for p in PHASES:
        out[p] = sum(s.get(p, 0.0) for s in steps)
    out["slowest"] = [
        {k: (round(v * 1e3, 2) if isinstance(v, float) and k != "t" else v) for k, v in s.items()
         if k != "t"} | {"at": round(s["t"] - start, 4)}
        for s in sorted(steps, key=lambda s: -s["dur"])[:3]
    ]
    return out


def summarize(waves: list[dict]) -> str:
    """One line of medians over waves of one kind."""
    if not waves:
        return "no trace"

    def med(key: str) -> float:
        xs = [w[key] for w in waves if w.get(key) is not None]
        return median(xs) if xs else float("nan")

    ms = lambda key: med(key) * 1e3  # noqa: E731
    return (f"wall {med('wall'):.3f}s | intake {ms('intake'):.1f} taken {ms('taken'):.1f} "
            f"all-first {ms('all_first'):.1f} engine-end {med('engine_end'):.3f}s tail {ms('tail'):.1f}ms | "
            f"{med('decode_steps'):.0f} decodes, median {med('decode_median_ms'):.2f} ms "
            f"(full batch {med('full_median_ms'):.2f}), joins {med('joins'):.0f} | "
            + " ".join(f"{p} {ms(p):.0f}" for p in PHASES) + f" waited {ms('waited'):.0f} ms")
