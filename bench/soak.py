"""Soak: thousands of mixed small requests at 32 concurrent against SmolLM2 (the mix and
the checks: tests/e2e/soak_load.py; tests/e2e/test_soak.py runs a short one). Prints
requests, failures by kind, p50/p99 latency, 503s and the worst run of them one client
saw, and the engine's RSS curve; exits 1 if a promise was broken.

    python bench/soak.py [--requests 2000] [--clients 32] [--seed 0]
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
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    keys = write_keys(tmp / "keys", args.clients)
    srv = ServerProcess([*SERVER_ARGS, "--api-key-file", str(tmp / "keys")], tmp / "cache")
    try:
        began = time.monotonic()
        report = run_soak(srv.base_url, keys, args.requests, seed=args.seed)
        settled = wait_until(lambda: engine_counts(srv.base_url, keys[0]) ==
                             {"in_flight": 0, "running": 0, "waiting": 0}, timeout=15)  # fmt: skip
        counts = engine_counts(srv.base_url, keys[0])
        print(f"server args: {' '.join(SERVER_ARGS)}; {args.clients} clients; "
              f"wall {time.monotonic() - began:.0f}s")
        print(report.summary())
        print(f"at the end: {counts} ({'settled' if settled else 'NOT back to zero'})")
        if report.examples:
            print("examples: " + "; ".join(report.examples))
        return 0 if settled and not report.failures else 1
    finally:
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())
