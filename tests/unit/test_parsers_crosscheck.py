"""Our parsers against mlx-lm's ``tool_parsers`` on the same model text (a cross-check only:
mlx-lm imports MLX, so the server never uses these; the test skips where MLX is missing)."""

from __future__ import annotations

import importlib
import json

import pytest

from mlx_textgen.parsers import parse_tool_calls

from ._parser_cases import CASES, WEATHER_TOOLS

# our format -> mlx-lm's module
MODULES = {
    "hermes": "json_tools",
    "qwen3_coder": "qwen3_coder",
    "glm4": "glm47",
    "kimi_k2": "kimi_k2",
    "minimax_m2": "minimax_m2",
    "gemma4": "gemma4",
    "function_gemma": "function_gemma",
    "mistral": "mistral",
    "pythonic": "pythonic",
}
# Cases mlx-lm reads differently: string-encoded arguments (3), a call without "arguments" (4),
# Mistral's [CALL_ID] (13: mlx-lm takes the id for the name), a second Mistral call without its
# own [TOOL_CALLS] (14), a bare pythonic list without <|tool_call_start|> (15).
NOT_COMPARABLE = {3, 4, 13, 14, 15}


def _mlx_calls(fmt: str, text: str) -> list[tuple[str, dict]]:
    module = importlib.import_module(f"mlx_lm.tool_parsers.{MODULES[fmt]}")
    start, end = module.tool_call_start, module.tool_call_end
    calls = []
    for chunk in text.split(start)[1:]:
        body = chunk.split(end)[0] if end else chunk
        parsed = module.parse_tool_call(body, WEATHER_TOOLS)
        for call in parsed if isinstance(parsed, list) else [parsed]:
            calls.append((call["name"], call["arguments"]))
    return calls


COMPARABLE = [
    (i, fmt, text, calls)
    for i, (fmt, text, _, calls) in enumerate(CASES)
    if fmt in MODULES and calls and i not in NOT_COMPARABLE
]


@pytest.mark.parametrize(("i", "fmt", "text", "calls"), COMPARABLE)
def test_same_calls_as_mlx_lm(i: int, fmt: str, text: str, calls: list) -> None:
    pytest.importorskip("mlx.core")
    ours = [
        (c.name, json.loads(c.arguments)) for c in parse_tool_calls(fmt, text, WEATHER_TOOLS).calls
    ]
    assert ours == calls
    assert _mlx_calls(fmt, text) == ours
