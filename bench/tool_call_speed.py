"""A forced tool call against plain text generation through the real server: TTFT, decode speed.

    python bench/tool_call_speed.py [--rounds 5] [--tokens 64] [--model PATH]

Both requests stream from the same chat prompt (the tools' Hermes instruction included, so
prompts are equal in length and the prompt cache serves both alike). The tool request is
`tool_choice: required` with parallel calls, so SmolLM2 keeps writing calls until
`--tokens`; the plain one ignores EOS. Paths alternate, reversed every other round.
Reported: median TTFT (the first chunk, sent with the first token even when a parser holds
its text back) and decode tokens/s (tokens after the first over the time from the first
chunk to the last), and tool/plain ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.server import ServerProcess  # noqa: E402

TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}]
ASK = [{"role": "user", "content": "What's the weather like in Boston, Paris and Rome today?"}]


def one(base: str, tokens: int, tool: bool) -> tuple[float, float, int]:
    body = {"messages": ASK, "tools": TOOLS, "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    body |= {"tool_choice": "required"} if tool else {"tool_choice": "none", "ignore_eos": True}
    if not tool:  # the same prompt: the tool instruction as a system message
        from mlx_textgen.parsers.prompting import add_tool_prompt

        body["messages"] = add_tool_prompt(ASK, TOOLS)
    start = time.perf_counter()
    first = last = None
    completion = 0
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                completion = chunk["usage"]["completion_tokens"]
            if chunk.get("choices"):  # the first chunk comes with the first token
                first = first or time.perf_counter()
                last = time.perf_counter()
    assert first is not None and last is not None
    return first - start, (completion - 1) / (last - first), completion


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    extra = ["--model-path", args.model] if args.model else []
    srv = ServerProcess(extra, Path(tempfile.gettempdir()) / "mlx_textgen_bench_cache")
    try:
        base = srv.base_url
        one(base, 8, True), one(base, 8, False)  # warm: compile, prompt cache
        runs: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
        for i in range(args.rounds):
            for tool in ((True, False) if i % 2 == 0 else (False, True)):
                runs[tool].append(one(base, args.tokens, tool))
        for tool, label in ((False, "plain text"), (True, "forced tool call")):
            ttft = statistics.median(r[0] for r in runs[tool])
            tps = statistics.median(r[1] for r in runs[tool])
            n = statistics.median(r[2] for r in runs[tool])
            print(f"{label:18s} ttft {ttft * 1000:7.1f} ms  decode {tps:6.2f} tok/s  tokens {n:.0f}")
        ratio = statistics.median(r[1] for r in runs[True]) / statistics.median(r[1] for r in runs[False])
        ttft_ratio = statistics.median(r[0] for r in runs[True]) / statistics.median(r[0] for r in runs[False])
        print(f"tool/plain: decode {ratio:.3f}  ttft {ttft_ratio:.3f}")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
