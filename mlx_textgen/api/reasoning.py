"""Reasoning on /v1/chat/completions: which format, where the thinking goes, its budget.

The format is the model config's ``reasoning_parser``, else the one its chat template (or
vocabulary) implies. ``use_reasoning_content`` (server option, per-request override) moves the
thinking to ``reasoning_content``/``reasoning``; otherwise it stays in ``content``. A budget
(``max_reasoning_tokens``, vLLM's ``thinking_token_budget``, or ``reasoning_effort``) ends the
thinking by forcing its end marker; 0 turns thinking off. Pure Python: no MLX here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mlx_textgen.api.errors import bad_request
from mlx_textgen.parsers import detect_reasoning_parser
from mlx_textgen.parsers.registry import UnknownParserError, get_reasoning_format

if TYPE_CHECKING:
    from mlx_textgen.api.protocol import ChatCompletionRequest
    from mlx_textgen.models.loader import ModelInfo

# reasoning_effort -> the thinking budget in tokens (None: no limit).
EFFORT_TOKENS: dict[str, int | None] = {
    "none": 0,
    "minimal": 256,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": None,
}


@dataclass(frozen=True)
class ReasoningPlan:
    """One request's reasoning: the format's name and markers, budget, where it goes."""

    parser: str
    start: str
    end: str
    budget: int | None  # None: unlimited; 0: thinking off
    separate: bool  # reasoning_content, else inline in content

    @property
    def off(self) -> bool:
        return self.budget == 0

    def opens(self, prompt: str) -> bool:
        """Whether the rendered ``prompt`` leaves the model inside its thinking."""
        return get_reasoning_format(self.parser).prompt_opens_reasoning(prompt)

    def closed(self, prompt: str) -> str:
        """``prompt`` with the thinking closed (budget 0 on a template that opens it)."""
        return prompt + self.end + "\n\n" if self.opens(prompt) else prompt


@lru_cache(maxsize=16)
def _detected(source: str | None, vocab: frozenset[str]) -> str | None:
    return detect_reasoning_parser(source, set(vocab))


def reasoning_format_name(info: ModelInfo) -> str | None:
    """The model's reasoning format (configured, else detected), or None."""
    from mlx_textgen.api.tooling import special_tokens, template_source

    if info.config.reasoning_parser:
        return info.config.reasoning_parser
    return _detected(template_source(info), special_tokens(info))


def _budget(body: ChatCompletionRequest) -> int | None:
    if body.max_reasoning_tokens is not None:
        return body.max_reasoning_tokens
    if body.thinking_token_budget is not None:
        return body.thinking_token_budget
    if body.reasoning_effort is not None:
        if body.reasoning_effort not in EFFORT_TOKENS:
            raise bad_request(
                f"reasoning_effort is one of {', '.join(EFFORT_TOKENS)}", "reasoning_effort"
            )
        return EFFORT_TOKENS[body.reasoning_effort]
    return None


def plan_reasoning(
    body: ChatCompletionRequest, info: ModelInfo, server_default: bool
) -> ReasoningPlan | None:
    """The request's ReasoningPlan, or None for a model without a reasoning format."""
    budget = _budget(body)
    name = reasoning_format_name(info)
    if name is None:
        return None
    try:
        fmt = get_reasoning_format(name)
    except UnknownParserError as exc:
        raise bad_request(f"the model's reasoning_parser: {exc}", "model") from None
    kwargs: dict[str, Any] = body.chat_template_kwargs or {}
    if kwargs.get("enable_thinking") is False or kwargs.get("thinking") is False:
        budget = 0
    separate = server_default if body.use_reasoning_content is None else body.use_reasoning_content
    return ReasoningPlan(fmt.name, fmt.start_marker, fmt.end_marker, budget, separate)


def template_kwargs(plan: ReasoningPlan | None, body: ChatCompletionRequest) -> dict[str, Any] | None:
    """The request's chat_template_kwargs, with ``enable_thinking: false`` when thinking is off."""
    kwargs = dict(body.chat_template_kwargs or {})
    if plan is not None and plan.off:
        kwargs.setdefault("enable_thinking", False)
    return kwargs or None
