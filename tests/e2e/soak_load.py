"""The soak's load and checks, shared by tests/e2e/test_soak.py (short) and bench/soak.py.

Clients (one API key each, so the server tells them apart) send a seeded mix of small
requests: chat and completions, streamed and not, n > 1, JSON-schema output, tool calls,
streams cancelled midway, prompts near the context window and past it. A 503 is retried
after its Retry-After; anything else unexpected is a failure of its kind. Every stream is
parsed whole: SSE frames, one finish_reason per choice, [DONE] last. The engine process's
resident set is sampled while the load runs. Raw httpx, not the openai client: the checks
need the frames, status codes and headers as sent.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MODEL = "smollm2-135m-instruct"
CONTEXT = 1536  # the soak server's --max-context-tokens: "near the limit" prompts fill it
WORDS = "apple river stone cloud tree lamp road bird song hill".split()
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
          "additionalProperties": False}  # fmt: skip
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": CITY}}

# kind -> weight in the mix
MIX = {
    "chat": 18, "chat_stream": 18, "completion": 10, "completion_stream": 10, "n2": 8,
    "n2_stream": 6, "json": 8, "tool": 8, "cancel": 8, "long": 2, "near_limit": 3,
    "too_long": 4,
}  # fmt: skip
# A long prompt: a shared head (a cache hit after the first) and its own tail. The window is
# capped (--max-context-tokens) because a prefill of SmolLM2's own 8192 tokens takes minutes
# on the 2-core CPU, stalling everything behind it. "near_limit" shares the head, fills the
# window but for a few tokens and asks for no max_tokens: it must stop at exactly the
# window. Past the window ("too_long") is a cheap 400 before the engine.
LONG_PREFIX_WORDS = 1200
NEAR_LIMIT_ROOM = 24


class SoakFailure(Exception):
    """A request answered other than the soak's rules allow."""


@dataclass
class SoakReport:
    """What the soak saw; `problems()` lists every broken promise."""

    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # kind:status
    failures: Counter[str] = field(default_factory=Counter)  # kind: what went wrong
    examples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # successful attempts, seconds
    overloaded: int = 0  # 503s (retried)
    max_consecutive_503: dict[str, int] = field(default_factory=dict)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    rss_idle: int = 0  # after the load, once the engine has been idle a while
    wall_s: float = 0.0

    def fail(self, kind: str, what: str) -> None:
        self.failures[f"{kind}: {what}"] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {what}")

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def rss_growth_second_half(self) -> float:
        """Growth of the resident set over the second half of the load: the mean of its
        last tenth against the mean around the halfway point."""
        if len(self.rss) < 10:
            return float("nan")
        n = len(self.rss)
        mid = [b for _, b in self.rss[int(n * 0.45): int(n * 0.55) + 1]]
        end = [b for _, b in self.rss[int(n * 0.9):]]
        return statistics.mean(end) / statistics.mean(mid) - 1

    def summary(self) -> str:
        rate = self.requests / max(self.wall_s, 1e-9)
        failures = ", ".join(f"{k}={v}" for k, v in sorted(self.failures.items()))
        lines = [
            f"requests {self.requests} in {self.wall_s:.0f}s ({rate:.1f}/s); "
            f"503s retried {self.overloaded}; max consecutive 503s for one client "
            f"{max(self.max_consecutive_503.values(), default=0)}",
            f"latency p50 {self.percentile(0.5):.2f}s p99 {self.percentile(0.99):.2f}s",
            "outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items())),
            "failures: " + (failures or "none"),
        ]
        if self.rss:
            step = max(1, len(self.rss) // 12)
            curve = " ".join(f"{t:.0f}s:{b / 2**20:.0f}" for t, b in self.rss[::step])
            peak = max(b for _, b in self.rss)
            lines.append(f"engine RSS MB over time: {curve}")
            growth = self.rss_growth_second_half()
            idle = self.rss_idle / 2**20
            lines.append(f"engine RSS growth over the second half {growth:+.1%}; peak "
                         f"{peak / 2**20:.0f} MB, idle after the load {idle:.0f} MB")
        return "\n".join(lines)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def build(kind: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """(path, body) of one request of `kind`."""
    text = f"{rng.randint(0, 10**6)} {_words(rng, 6)}"
    chat = {"model": MODEL, "max_tokens": rng.randint(1, 8),
            "messages": [{"role": "user", "content": text}]}  # fmt: skip
    completion = {"model": MODEL, "max_tokens": chat["max_tokens"], "prompt": text}
    chats, completions = "/v1/chat/completions", "/v1/completions"
    if kind == "chat":
        return chats, chat
    if kind == "chat_stream":
        return chats, chat | {"stream": True, "stream_options": {"include_usage": True}}
    if kind == "completion":
        return completions, completion
    if kind == "completion_stream":
        return completions, completion | {"stream": True}
    if kind in ("n2", "n2_stream"):
        return chats, chat | {"n": 2, "temperature": 0.8, "stream": kind == "n2_stream"}
    if kind == "json":
        fmt = {"type": "json_schema",
               "json_schema": {"name": "n", "schema": SCHEMA, "strict": True}}  # fmt: skip
        return chats, chat | {"response_format": fmt, "max_tokens": 8}
    if kind == "tool":
        return chats, chat | {"tools": [TOOL], "tool_choice": "required", "max_tokens": 8}
    if kind == "cancel":
        return completions, completion | {"stream": True, "max_tokens": 64, "ignore_eos": True}
    if kind == "long":  # BPE: " long" is one token
        head = "long " * LONG_PREFIX_WORDS
        return completions, completion | {"prompt": head + _words(rng, 8)}
    if kind == "near_limit":
        head = "long " * (CONTEXT - NEAR_LIMIT_ROOM)
        body = completion | {"prompt": head + text, "ignore_eos": True}
        del body["max_tokens"]  # the rest of the window
        return completions, body
    return completions, completion | {"prompt": "long " * (CONTEXT + 100)}  # too_long


def check_stream(kind: str, lines: list[str], n: int) -> None:
    """SSE frames well formed, each choice finished once, [DONE] last; else SoakFailure."""
    data = [line[6:] for line in lines if line.startswith("data: ")]
    if any(line and not line.startswith(("data: ", ":")) for line in lines):
        raise SoakFailure("a line that is not an SSE field")
    if not data or data[-1] != "[DONE]" or data.count("[DONE]") != 1:
        raise SoakFailure("no single [DONE] at the end")
    finished: Counter[int] = Counter()
    for frame in data[:-1]:
        event = json.loads(frame)
        if "error" in event:
            raise SoakFailure(f"error event {event['error'].get('code')}")
        for choice in event["choices"]:
            if choice.get("finish_reason") is not None:
                finished[choice["index"]] += 1
    if sorted(finished) != list(range(n)) or any(v != 1 for v in finished.values()):
        raise SoakFailure(f"finish reasons per choice {dict(finished)}")


def check_body(kind: str, body: dict[str, Any], n: int) -> None:
    choices = body.get("choices", [])
    usage = body.get("usage") or {}
    if kind == "near_limit" and usage.get("total_tokens") != CONTEXT:
        raise SoakFailure(f"{usage.get('total_tokens')} tokens in all, not the window {CONTEXT}")
    if sorted(c["index"] for c in choices) != list(range(n)):
        raise SoakFailure("choice indexes")
    for c in choices:
        if c.get("finish_reason") not in ("stop", "length", "tool_calls"):
            raise SoakFailure(f"finish_reason {c.get('finish_reason')}")
        if kind == "json" and c["finish_reason"] == "stop":
            json.loads(c["message"]["content"])  # complete constrained output parses
        if kind == "near_limit" and c["finish_reason"] != "length":
            raise SoakFailure(f"finish_reason {c['finish_reason']} at the window")
        calls = (c.get("message") or {}).get("tool_calls")
        if kind == "tool" and c["finish_reason"] == "tool_calls" and not calls:
            raise SoakFailure("tool_calls finish without calls")


class Client:
    """One worker with its own API key; counts its consecutive 503s."""

    def __init__(
        self, http: httpx.AsyncClient, key: str, report: SoakReport, retry_cap: float
    ) -> None:
        self.http, self.key, self.report, self.retry_cap = http, key, report, retry_cap
        self.run_of_503 = 0

    async def send(self, kind: str, path: str, body: dict[str, Any]) -> None:
        n = body.get("n", 1)
        while True:
            began = time.monotonic()
            status, payload = await self._attempt(kind, path, body, n)
            if status != 503:
                break
            self.report.overloaded += 1
            self.run_of_503 += 1
            worst = self.report.max_consecutive_503
            worst[self.key] = max(worst.get(self.key, 0), self.run_of_503)
            await asyncio.sleep(min(float(payload or 1), self.retry_cap))
        self.run_of_503 = 0
        self.report.outcomes[f"{kind}:{status}"] += 1
        expected = 400 if kind == "too_long" else 200
        if status == -1:
            pass  # counted where it failed
        elif status != expected:
            self.report.fail(kind, f"status {status}")
        elif kind == "too_long" and payload["error"].get("code") != "context_length_exceeded":
            self.report.fail(kind, "400 without context_length_exceeded")
        else:
            self.report.latencies.append(time.monotonic() - began)

    async def _attempt(self, kind: str, path: str, body: dict[str, Any], n: int) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.key}"}
        try:
            if not body.get("stream"):
                r = await self.http.post(path, json=body, headers=headers)
                if r.status_code == 503:
                    return 503, r.headers.get("Retry-After")
                payload = r.json()
                if r.status_code == 200:
                    check_body(kind, payload, n)
                return r.status_code, payload
            async with self.http.stream("POST", path, json=body, headers=headers) as r:
                if r.status_code != 200:
                    await r.aread()
                    if r.status_code == 503:
                        return 503, r.headers.get("Retry-After")
                    return r.status_code, r.json()
                lines = []
                async for line in r.aiter_lines():
                    lines.append(line)
                    if kind == "cancel" and sum(x.startswith("data: ") for x in lines) >= 2:
                        return 200, {}  # hang up mid-stream: the server aborts the rest
                check_stream(kind, lines, n)
                return 200, {}
        except SoakFailure as exc:
            self.report.fail(kind, str(exc))
            return -1, {}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:  # a field missing
            self.report.fail(kind, type(exc).__name__)
            return -1, {}


def engine_pid(base_url: str) -> int:
    models = httpx.get(f"{base_url}/health", timeout=10).json()["models"]
    return next(iter(models.values()))["engine_pid"]


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _sample_rss(
    pid: int, report: SoakReport, stop: threading.Event, every: float, t0: float
) -> None:
    while not stop.wait(every):
        try:
            report.rss.append((time.monotonic() - t0, rss_of(pid)))
        except OSError:
            return


async def _run(base_url: str, keys: list[str], total: int, seed: int, report: SoakReport,
               retry_cap: float) -> None:  # fmt: skip
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=total)
    plan = [(kind, *build(kind, random.Random(rng.random()))) for kind in kinds]
    limits = httpx.Limits(max_connections=len(keys) + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as http:
        clients = [Client(http, key, report, retry_cap) for key in keys]

        async def worker(c: Client) -> None:
            while plan:
                kind, path, body = plan.pop()
                await c.send(kind, path, body)
                report.requests += 1

        await asyncio.gather(*(worker(c) for c in clients))


def run_soak(base_url: str, keys: list[str], total: int, seed: int = 0, retry_cap: float = 1.0,
             rss_every: float = 1.0) -> SoakReport:  # fmt: skip
    """Send `total` requests from one client per key (as many at once); sample the engine's
    RSS meanwhile and once more after it has been idle (engine/idle.py)."""
    report = SoakReport()
    pid = engine_pid(base_url)
    stop = threading.Event()
    t0 = time.monotonic()
    sampler = threading.Thread(
        target=_sample_rss, args=(pid, report, stop, rss_every, t0), daemon=True
    )
    sampler.start()
    try:
        asyncio.run(_run(base_url, keys, total, seed, report, retry_cap))
    finally:
        report.wall_s = time.monotonic() - t0
        stop.set()
        sampler.join()
    report.rss_idle = _idle_rss(pid, base_url)
    return report


def _idle_rss(pid: int, base_url: str, timeout: float = 10.0) -> int:
    """The engine's lowest RSS over `timeout` seconds after the load: an idle engine gives
    memory back a second after its last request (engine/idle.py)."""
    deadline, low = time.monotonic() + timeout, rss_of(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        low = min(low, rss_of(pid))
    return low


def engine_counts(base_url: str, key: str) -> dict[str, Any]:
    """In flight (HTTP side) and the engine's own running and waiting counts, now."""
    h = httpx.get(f"{base_url}/health", params={"memory": "true"}, timeout=30,
                  headers={"Authorization": f"Bearer {key}"}).json()  # fmt: skip
    m = next(iter(h["models"].values()))
    mem = m["memory"] or {}
    return {"in_flight": h["in_flight"], "running": mem.get("running_sequences"),
            "waiting": mem.get("waiting_requests")}  # fmt: skip


SERVER_ARGS = ["--max-running-requests", "8", "--max-queued-requests", "8",
               "--cache-ram-gb", "0.25", "--cache-disk-gb", "0.5",
               "--max-context-tokens", str(CONTEXT)]  # fmt: skip


def write_keys(path: Path, count: int) -> list[str]:
    keys = [f"soak-client-{i:02d}" for i in range(count)]
    path.write_text("\n".join(keys) + "\n")
    return keys
