"""Who waits how long when the server is full: the admission line (engine/admission.py)
against first come, first served, on the same server.

Clients loop on short completions against a server that runs 2 requests and queues none,
so most attempts are 503s, retried after `Retry-After`. With one API key per client the
line tells them apart (longest-refused first); with one key shared by all, they are one
client to the line, so a freed place goes to whichever retry comes first: what every
client got before the line existed. Per request: the 503s before it got in and the wait.

    python bench/fairness.py [--clients 8] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.server import ServerProcess
from tests.e2e.soak_load import MODEL

BODY = {"model": MODEL, "prompt": "Count: 1, 2,", "max_tokens": 4, "temperature": 0,
        "ignore_eos": True}  # fmt: skip


async def client(http: httpx.AsyncClient, key: str, until: float, runs: list[int],
                 waits: list[float], retry_cap: float) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < until:
        began, refused = time.monotonic(), 0
        while True:
            r = await http.post("/v1/completions", json=BODY, headers=headers)
            if r.status_code != 503:
                break
            refused += 1
            await asyncio.sleep(min(float(r.headers.get("Retry-After", 1)), retry_cap))
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}: {r.text[:200]}")
        runs.append(refused)
        waits.append(time.monotonic() - began)


async def phase(base: str, keys: list[str], seconds: float, retry_cap: float) -> dict[str, float]:
    runs: list[int] = []
    waits: list[float] = []
    until = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        await asyncio.gather(*(client(http, k, until, runs, waits, retry_cap) for k in keys))
    xs = sorted(waits)
    return {"requests": len(runs), "max_503_run": max(runs), "mean_503": statistics.mean(runs),
            "wait_p50": xs[len(xs) // 2], "wait_p99": xs[min(len(xs) - 1, int(0.99 * len(xs)))],
            "wait_max": xs[-1]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--retry-cap", type=float, default=0.5, help="longest sleep after a 503")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    own = [f"fair-{i}" for i in range(args.clients)]
    (tmp / "keys").write_text("\n".join([*own, "shared"]) + "\n")
    srv = ServerProcess(["--max-running-requests", "2", "--max-queued-requests", "0",
                         "--api-key-file", str(tmp / "keys")], tmp / "cache")  # fmt: skip
    try:
        print(f"{args.clients} clients, 2 running, none queued, {args.seconds:.0f} s each way; "
              f"retry after min(Retry-After, {args.retry_cap}) s")  # fmt: skip
        print(f"{'admission':<28} {'requests':>8} {'max 503 run':>11} {'mean 503s':>9} "
              f"{'wait p50 s':>10} {'p99 s':>7} {'max s':>7}")  # fmt: skip
        for name, keys in (("line (one key per client)", own),
                           ("first come (one shared key)", ["shared"] * args.clients)):
            m = asyncio.run(phase(srv.base_url, keys, args.seconds, args.retry_cap))
            print(f"{name:<28} {m['requests']:>8} {m['max_503_run']:>11} {m['mean_503']:>9.1f} "
                  f"{m['wait_p50']:>10.2f} {m['wait_p99']:>7.2f} {m['wait_max']:>7.2f}",
                  flush=True)  # fmt: skip
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
