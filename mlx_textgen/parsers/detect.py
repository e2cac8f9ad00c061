"""Which parser a model needs, from its chat template text and its vocabulary's special tokens."""

from __future__ import annotations

import jinja2
import jinja2.ext
from jinja2 import meta

# First match wins: the more specific markup comes before the generic ``<tool_call>``.
_TEMPLATE_TOOL_RULES: tuple[tuple[tuple[str, ...], str | None], ...] = (
    # Formats we do not parse, whose markup would otherwise match a generic rule below.
    (("]<]minimax[>[",), None),  # MiniMax M3's namespaced tags
    (("<seed:tool_call>",), None),  # ByteDance Seed-OSS
    (("<minimax:tool_call>",), "minimax_m2"),
    (("<|tool_call>", "<tool_call|>"), "gemma4"),
    (("<start_function_call>",), "function_gemma"),
    (("<arg_key>",), "glm4"),
    (("<|tool_calls_section_begin|>",), "kimi_k2"),
    (("to=functions.",), "gpt_oss"),
    (("<|channel|>", "<|call|>"), "gpt_oss"),
    (("<tool_call>", "<function="), "qwen3_coder"),
    (("[TOOL_CALLS]",), "mistral"),
    (("<|tool_call_start|>",), "pythonic"),
    (("<｜tool▁calls▁begin｜>",), "deepseek_v3"),
    (("<tool_call>",), "hermes"),
    (("<|python_tag|>",), "llama3_json"),
    (('"parameters": dictionary of argument name',), "llama3_json"),
)
_VOCAB_TOOL_RULES: tuple[tuple[str, str], ...] = (
    ("<minimax:tool_call>", "minimax_m2"),
    ("<|tool_calls_section_begin|>", "kimi_k2"),
    ("[TOOL_CALLS]", "mistral"),
    ("<|tool_call_start|>", "pythonic"),
    ("<｜tool▁calls▁begin｜>", "deepseek_v3"),
    ("<tool_call>", "hermes"),
    ("<|python_tag|>", "llama3_json"),
)


def detect_tool_parser(
    chat_template: str | None, vocab_tokens: set[str] | None = None
) -> str | None:
    """The registry name of the tool-call parser the template (else the vocabulary) implies."""
    if chat_template:
        for needles, name in _TEMPLATE_TOOL_RULES:
            if all(n in chat_template for n in needles):
                return name
    for token, name in _VOCAB_TOOL_RULES:
        if vocab_tokens and token in vocab_tokens:
            return name
    return None


def detect_reasoning_parser(
    chat_template: str | None, vocab_tokens: set[str] | None = None
) -> str | None:
    """The registry name of the reasoning parser the template (else the vocabulary) implies.

    ``deepseek_r1`` when the template's generation prompt opens ``<think>`` (generation starts
    inside the thinking), ``qwen3`` for an optional ``<think>`` block.
    """
    template = chat_template or ""
    vocab = vocab_tokens or set()
    if "<|channel|>" in template and "analysis" in template:
        return "gpt_oss"
    if "<|channel>thought" in template:
        return "gemma4"
    if "[THINK]" in template and "[/THINK]" in template:
        return "mistral"
    if "<think>" in template or {"<think>", "</think>"} <= vocab:
        return "deepseek_r1" if _starts_thinking(template) else "qwen3"
    if "[THINK]" in vocab and "[/THINK]" in vocab:
        return "mistral"
    return None


def _starts_thinking(template: str) -> bool:
    # R1 and its distills think first (older templates leave the <think> to the model); later
    # DeepSeek templates switch thinking with a `thinking` flag and are handled by rendering.
    if (
        "<｜Assistant｜>" in template
        and "</think>" in template
        and not _reads(template, "thinking")
    ):
        return True
    return _generation_opens_think(template)


def _reads(template: str, name: str) -> bool:
    env = jinja2.Environment(extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    try:
        return name in meta.find_undeclared_variables(env.parse(template))
    except jinja2.TemplateSyntaxError:
        return name in template


def _generation_opens_think(template: str) -> bool:
    if not template:
        return False
    from ..chat.templates import render_chat  # pure Python (jinja2), no MLX

    try:
        prompt = render_chat([{"role": "user", "content": "Hi"}], chat_template=template)
    except Exception:  # noqa: BLE001 - untrusted template code; fall back to "optional"
        return False
    at = prompt.rfind("<think>")
    return at >= 0 and "</think>" not in prompt[at:]


def template_supports_tools(chat_template: str | None) -> bool:
    """Whether the template reads a ``tools`` variable (so tools can go through it)."""
    return bool(chat_template) and _reads(chat_template, "tools")


class _GenerationTag(jinja2.ext.Extension):
    # Parse transformers' {% generation %} blocks; rendering is not needed here.
    tags = {"generation"}  # noqa: RUF012

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)
