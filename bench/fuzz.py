"""A longer fuzz run of request bodies (tests/e2e/test_fuzz.py's strategies) against a real
server; prints the answers' status counts and any 5xx or non-JSON answer it finds.

    python bench/fuzz.py [--examples 2000] [--seed 0]   # starts SmolLM2 on a free port
    python bench/fuzz.py --url http://127.0.0.1:5001 --key KEY
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.fuzz_bodies import BASES, broken, encode, mutated  # noqa: E402
from tests.e2e.test_fuzz import check  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--key", default="fuzz-key")
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    srv = None
    if args.url is None:
        from tests.e2e.server import ServerProcess

        srv = ServerProcess(["--api-key", args.key], Path(tempfile.mkdtemp()))
        args.url = srv.base_url
    counts: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    http = httpx.Client(base_url=args.url, timeout=120,
                        headers={"Authorization": f"Bearer {args.key}"})

    def one(path: str, raw: bytes, ctype: str) -> None:
        r = http.post(path, content=raw, headers={"Content-Type": ctype} if ctype else {})
        counts[f"{path} {r.status_code}"] += 1
        try:
            check(r)
        except AssertionError as exc:  # keep going: report them all
            failures.append(f"{path} {raw[:300]!r}: {exc}")

    bodies = st.one_of(
        *[mutated(p).map(lambda b, p=p: (p, encode(b), "application/json")) for p in BASES],
        *[broken(p).map(lambda rc, p=p: (p, *rc)) for p in BASES],
    )

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=bodies)
    def run(case: tuple[str, bytes, str]) -> None:
        one(*case)

    try:
        run()
        healthy = http.get("/health").json()["status"] == "ok"
    finally:
        if srv is not None:
            srv.stop()
    for key, n in sorted(counts.items()):
        print(f"{key:40s} {n}")
    print(f"requests: {sum(counts.values())}  failures: {len(failures)}  health ok: {healthy}")
    for f in failures[:20]:
        print("FAIL", f)
    sys.exit(1 if failures or not healthy else 0)


if __name__ == "__main__":
    main()
