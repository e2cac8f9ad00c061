"""Tool conversations on the real chat templates in shared/fixtures/chat_templates: history with
tool calls and results renders, tools reach the prompt, and detection picks each family's parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlx_textgen.chat.templates import render_chat
from mlx_textgen.chat.tools import render_with_tools
from mlx_textgen.parsers import (
    detect_reasoning_parser,
    detect_tool_parser,
    get_reasoning_format,
    get_tool_format,
    template_supports_tools,
)
from mlx_textgen.parsers.prompting import add_tool_prompt, hermes_history

from ._parser_cases import WEATHER_TOOLS

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "chat_templates"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.jinja")) if FIXTURES.is_dir() else []
pytestmark = pytest.mark.skipif(not NAMES, reason=f"fixtures not found at {FIXTURES}")

# Templates that need what we cannot give them.
SKIPS = {
    "Kimi-K2-Instruct": "calls list.append, which the immutable sandbox (as transformers') refuses",
    "Kimi-K2-Thinking": "calls list.append, which the immutable sandbox (as transformers') refuses",
    "CohereForAI-c4ai-command-r-plus-tool_use": "needs a description on every parameter",
    "fireworks-ai-llama-3-firefunction-v2": "reads a `functions` variable instead of `tools`",
    "llama-cpp-deepseek-r1": "serialises a Jinja generator with tojson (a llama.cpp test template)",
}


def _conversation(content: str | None) -> list[dict]:
    return [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": content,
            "tool_calls": [
                {
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123", "content": "Sunny, 21C"},
    ]


def _template(name: str) -> str:
    if name in SKIPS:
        pytest.skip(SKIPS[name])
    return (FIXTURES / f"{name}.jinja").read_text(encoding="utf-8")


@pytest.mark.parametrize("content", ["", None], ids=["empty", "null"])
@pytest.mark.parametrize("name", NAMES)
def test_tool_history_renders(name: str, content: str | None) -> None:
    template = _template(name)
    messages = _conversation(content)
    if template_supports_tools(template):
        prompt = render_with_tools(
            messages, chat_template=template, tools=WEATHER_TOOLS, bos_token="<s>", eos_token="</s>"
        )
        assert "ping" in prompt  # the tools reached the prompt (ping has no parameters)
    else:  # the Hermes instruction path, history folded into plain turns
        prompt = render_chat(
            add_tool_prompt(hermes_history(messages), WEATHER_TOOLS),
            chat_template=template,
            bos_token="<s>",
            eos_token="</s>",
        )
        assert "<tool_call>" in prompt and "<tool_response>" in prompt
    for needle in ("get_weather", "Paris", "Sunny, 21C"):
        assert needle in prompt, needle
    assert "None" not in prompt  # a null content never renders as text


# (fixture, tool parser, reasoning parser)
DETECTION = [
    ("Qwen-Qwen2.5-7B-Instruct", "hermes", None),
    ("Qwen-Qwen3-0.6B", "hermes", "qwen3"),
    ("Qwen-QwQ-32B", "hermes", "qwen3"),
    ("Qwen3-Coder", "qwen3_coder", None),
    ("Qwen3.5-4B", "qwen3_coder", "deepseek_r1"),
    ("meta-llama-Llama-3.1-8B-Instruct", "llama3_json", None),
    ("meta-llama-Llama-3.2-3B-Instruct", "llama3_json", None),
    ("meta-llama-Llama-3.3-70B-Instruct", "llama3_json", None),
    ("mistralai-Mistral-Nemo-Instruct-2407", "mistral", None),
    ("Mistral-Small-3.2-24B-Instruct-2506", "mistral", None),
    ("unsloth-mistral-Devstral-Small-2507", "mistral", None),
    ("mistralai-Ministral-3-14B-Reasoning-2512", "mistral", "mistral"),
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", "hermes", None),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "hermes", None),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "deepseek_v3", "deepseek_r1"),
    ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "deepseek_v3", "deepseek_r1"),
    ("deepseek-ai-DeepSeek-V3.1", "deepseek_v3", "qwen3"),
    ("GLM-4.6", "glm4", "qwen3"),
    ("GLM-4.7-Flash", "glm4", "deepseek_r1"),
    ("poolside-Laguna-XS.2", "glm4", "qwen3"),
    ("moonshotai-Kimi-K2", "kimi_k2", None),
    ("Kimi-K2-Thinking", "kimi_k2", "qwen3"),
    ("MiniMax-M2", "minimax_m2", "deepseek_r1"),
    ("openai-gpt-oss-120b", "gpt_oss", "gpt_oss"),
    ("llm-jp-llm-jp-4.1-8b-thinking", "gpt_oss", "gpt_oss"),
    ("google-gemma-4-31B-it", "gemma4", "gemma4"),
    ("LFM2.5-8B-A1B", "pythonic", "qwen3"),
    ("NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", "qwen3_coder", "deepseek_r1"),
    ("ibm-granite-granite-4.0", "hermes", None),
    ("HuggingFaceTB-SmolLM3-3B", None, "qwen3"),
    ("MiniMax-M3", None, None),  # namespaced tags we do not parse
    ("microsoft-Phi-3.5-mini-instruct", None, None),
]


@pytest.mark.parametrize(("name", "tool", "reasoning"), DETECTION)
def test_detection_per_family(name: str, tool: str | None, reasoning: str | None) -> None:
    template = (FIXTURES / f"{name}.jinja").read_text(encoding="utf-8")
    assert detect_tool_parser(template) == tool
    assert detect_reasoning_parser(template) == reasoning
    if tool:
        get_tool_format(tool)
    if reasoning:
        get_reasoning_format(reasoning)


@pytest.mark.parametrize(
    ("name", "supports"),
    [
        ("Qwen-Qwen2.5-7B-Instruct", True),
        ("meta-llama-Llama-3.1-8B-Instruct", True),
        ("openai-gpt-oss-120b", True),
        ("microsoft-Phi-3.5-mini-instruct", False),
        ("google-gemma-2-2b-it", False),
        ("HuggingFaceTB-SmolLM3-3B", False),
    ],
)
def test_template_supports_tools(name: str, supports: bool) -> None:
    template = (FIXTURES / f"{name}.jinja").read_text(encoding="utf-8")
    assert template_supports_tools(template) is supports


def test_detection_from_the_vocabulary() -> None:
    assert detect_tool_parser(None, {"<tool_call>", "</tool_call>"}) == "hermes"
    assert detect_tool_parser(None, {"[TOOL_CALLS]"}) == "mistral"
    assert detect_tool_parser("{{ messages }}", {"<|python_tag|>"}) == "llama3_json"
    assert detect_tool_parser(None, None) is None
    assert detect_reasoning_parser(None, {"<think>", "</think>"}) == "qwen3"
    assert detect_reasoning_parser(None, {"[THINK]", "[/THINK]"}) == "mistral"
    assert detect_reasoning_parser("{{ messages }}", set()) is None
    assert not template_supports_tools(None)
