"""Soak: thousands of mixed small requests at 32 concurrent against SmolLM2 (the mix and
the checks: tests/e2e/soak_load.py; tests/e2e/test_soak.py runs a short one). Prints
requests, failures by kind, p50/p99 latency, 503s and the worst run of them one client
saw, and the engine's RSS curve; exits 1 if a promise was broken.

    python bench/soak.py [--requests 2000] [--clients 32] [--seed 0]
                         [--max-running 8 --max-queued 8]

The requests run in two halves with an idle pause after each (the engine gives memory back
a second after its last request, engine/idle.py): the engine's idle RSS after the first
half against after the second is the leak measure ("memory flat after warm-up"); the RSS
under load is printed too, but it follows what happens to be running (a long prompt's KV).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.server import ServerProcess, wait_until  # noqa: E402
from tests.e2e.soak_load import SERVER_ARGS, engine_counts, run_soak, write_keys  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-running", type=int, default=8)
    ap.add_argument("--max-queued", type=int, default=8)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    keys = write_keys(tmp / "keys", args.clients)
    server_args = [*SERVER_ARGS, "--max-running-requests", str(args.max_running),
                   "--max-queued-requests", str(args.max_queued)]  # fmt: skip
    srv = ServerProcess([*server_args, "--api-key-file", str(tmp / "keys")], tmp / "cache")
    ok = True
    idle: list[int] = []
    try:
        began = time.monotonic()
        print(f"server args: {' '.join(server_args)}; {args.clients} clients", flush=True)
        for half in (1, 2):
            report = run_soak(srv.base_url, keys, args.requests // 2, seed=args.seed + half)
            settled = wait_until(lambda: engine_counts(srv.base_url, keys[0]) ==
                                 {"in_flight": 0, "running": 0, "waiting": 0}, timeout=15)  # fmt: skip
            counts = engine_counts(srv.base_url, keys[0])
            idle.append(report.rss_idle)
            print(f"-- half {half}: wall so far {time.monotonic() - began:.0f}s")
            print(report.summary())
            print(f"at the end of half {half}: {counts} "
                  f"({'settled' if settled else 'NOT back to zero'})", flush=True)  # fmt: skip
            if report.examples:
                print("examples: " + "; ".join(report.examples))
            ok = ok and settled and not report.failures
        growth = idle[1] / idle[0] - 1
        print(f"engine idle RSS after half 1 {idle[0] / 2**20:.0f} MB, after half 2 "
              f"{idle[1] / 2**20:.0f} MB: growth {growth:+.1%} (goal < 5%)")  # fmt: skip
        return 0 if ok else 1
    finally:
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())
