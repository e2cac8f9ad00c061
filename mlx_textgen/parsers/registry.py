"""The parser registry: names (as the ``tool_parser`` / ``reasoning_parser`` model options use
them) -> formats, and the factories the API layer calls."""

from __future__ import annotations

from . import reasoning, reasoning_harmony
from .reasoning import ReasoningFormat, ReasoningParser
from .tool_base import ToolCallParser, ToolFormat, Tools, parse_all
from .tool_deepseek import DeepSeekV3Format
from .tool_gemma import FunctionGemmaFormat, Gemma4Format
from .tool_glm import GlmFormat
from .tool_gpt_oss import GptOssFormat
from .tool_hermes import HermesFormat
from .tool_kimi import KimiK2Format
from .tool_llama3 import Llama3JsonFormat
from .tool_minimax import MiniMaxFormat
from .tool_mistral import MistralFormat
from .tool_pythonic import PythonicFormat
from .tool_qwen3_coder import Qwen3CoderFormat
from .types import ParsedToolCalls

TOOL_FORMATS: dict[str, ToolFormat] = {
    fmt.name: fmt
    for fmt in (
        HermesFormat(),
        Qwen3CoderFormat(),
        Llama3JsonFormat(),
        MistralFormat(),
        PythonicFormat(),
        GlmFormat(),
        KimiK2Format(),
        MiniMaxFormat(),
        Gemma4Format(),
        FunctionGemmaFormat(),
        DeepSeekV3Format(),
        GptOssFormat(),
    )
}
# Other names for the same formats (mlx-lm's module names, family names).
TOOL_ALIASES: dict[str, str] = {
    "json_tools": "hermes",
    "qwen": "hermes",
    "qwen2_5": "hermes",
    "qwen3": "hermes",
    "llama3": "llama3_json",
    "llama": "llama3_json",
    "glm47": "glm4",
    "glm45": "glm4",
    "laguna": "glm4",
    "kimi": "kimi_k2",
    "minimax": "minimax_m2",
    "deepseek": "deepseek_v3",
    "harmony": "gpt_oss",
    "lfm2": "pythonic",
}

REASONING_FORMATS: dict[str, ReasoningFormat] = {
    fmt.name: fmt
    for fmt in (
        reasoning.DeepSeekR1Format(),
        reasoning.Qwen3Format(),
        reasoning.MistralFormat(),
        reasoning.Gemma4Format(),
        reasoning_harmony.GptOssFormat(),
    )
}
REASONING_ALIASES: dict[str, str] = {
    "deepseek": "deepseek_r1",
    "harmony": "gpt_oss",
    "think": "qwen3",
}


class UnknownParserError(ValueError):
    """A ``tool_parser`` / ``reasoning_parser`` name that the registry does not know."""


def _lookup(kind: str, name: str, table: dict, aliases: dict[str, str]):  # type: ignore[no-untyped-def]
    key = name.strip().lower().replace("-", "_")
    key = aliases.get(key, key)
    if key not in table:
        valid = ", ".join(sorted(table)) + " (aliases: " + ", ".join(sorted(aliases)) + ")"
        raise UnknownParserError(f"unknown {kind} {name!r}; valid names: {valid}")
    return table[key]


def get_tool_format(name: str) -> ToolFormat:
    """The tool-call format registered as ``name`` (or an alias); UnknownParserError if none."""
    return _lookup("tool_parser", name, TOOL_FORMATS, TOOL_ALIASES)


def get_reasoning_format(name: str) -> ReasoningFormat:
    """The reasoning format registered as ``name`` (or an alias); UnknownParserError if none."""
    return _lookup("reasoning_parser", name, REASONING_FORMATS, REASONING_ALIASES)


def make_tool_parser(
    name: str, tools: Tools | None = None, *, stream_arguments: bool = False
) -> ToolCallParser:
    """A streaming tool-call parser for one response (``stream_arguments``: see ToolCallParser)."""
    return ToolCallParser(get_tool_format(name), tools, stream_arguments=stream_arguments)


def make_reasoning_parser(name: str, *, starts_in_reasoning: bool | None = None) -> ReasoningParser:
    """A streaming reasoning parser for one response (see ReasoningFormat.make_parser)."""
    return get_reasoning_format(name).make_parser(starts_in_reasoning=starts_in_reasoning)


def parse_tool_calls(
    name: str, text: str, tools: Tools | None = None, *, stream_arguments: bool = False
) -> ParsedToolCalls:
    """Non-streaming: split a whole response into content and calls (pass the same
    ``stream_arguments`` as the streaming path so that both give the same arguments text)."""
    return parse_all(get_tool_format(name), text, tools, stream_arguments=stream_arguments)
