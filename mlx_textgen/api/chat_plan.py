"""A chat request's tools and reasoning, turned into engine parameters and response parsers.

The grammars (a tool call's, structured output's) are compiled here in the HTTP process, so a
bad tool schema is a 400 naming the tool before anything is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from mlx_textgen.api.chat_response import ChoiceParser, ParseSpec
from mlx_textgen.api.constraints import grammar_cache
from mlx_textgen.api.errors import bad_request
from mlx_textgen.api.reasoning import ReasoningPlan
from mlx_textgen.api.tooling import ToolPlan
from mlx_textgen.engine.request import SamplingParams
from mlx_textgen.guided.compiler import ConstraintError
from mlx_textgen.guided.forms import after_whitespace
from mlx_textgen.parsers.grammars import grammar_error, tool_call_grammar

if TYPE_CHECKING:
    from mlx_textgen.models.loader import ModelInfo


@dataclass
class ChatPlan:
    """Tools and reasoning of one request; ``opens[i]``: prompt i leaves the model thinking."""

    tools: ToolPlan | None
    reasoning: ReasoningPlan | None
    opens: list[bool]

    def spec(self, prompt: int) -> ParseSpec:
        t, r = self.tools, self.reasoning
        return ParseSpec(
            tool_parser=t.parser if t else None,
            tools=t.tools if t else None,
            stream_arguments=bool(t and t.forced),
            forced=bool(t and t.forced),
            reasoning_parser=r.parser if r else None,
            starts_in_reasoning=bool(r and self.opens[prompt]),
            separate_reasoning=r.separate if r else True,
        )

    def new_parser(self, prompt: int) -> ChoiceParser | None:
        spec = self.spec(prompt)
        return ChoiceParser(spec) if spec.active else None

    async def params(self, params: SamplingParams, info: ModelInfo) -> SamplingParams:
        """``params`` (with any structured-output grammar) plus the tool grammar and the
        thinking's constraint; each grammar compiled once here (a 400 if it can't be)."""
        t = self.tools
        if t is not None:
            if params.grammar is not None:
                raise bad_request(
                    "tools with a response format (or guided_*) in one request are not supported",
                    "response_format",
                )
            await _check_tool_grammar(t, info)
            # auto: the grammar covers what follows the start marker (trigger excluded); a
            # marker that is ordinary text mid-answer (Llama's `{`) counts only at the start.
            params = replace(
                params, grammar=t.grammar.grammar, grammar_trigger=t.grammar.trigger,
                trigger_at_start=t.grammar.trigger_at_start_only,
            )
            await _check(info, t.grammar.grammar, "tools")
        return await self._thinking(params, info)

    async def _thinking(self, params: SamplingParams, info: ModelInfo) -> SamplingParams:
        r = self.reasoning
        if r is None or r.off or (r.budget is None and params.grammar is None):
            return params
        hf = info.hf_tokenizer
        opens = self.opens[0]
        if params.grammar is not None and params.grammar_trigger is None:
            params = replace(params, grammar=after_whitespace(params.grammar))
            await _check(info, params.grammar, "response_format")
        return replace(
            params,
            reasoning_end=r.end,
            reasoning_end_ids=tuple(hf.encode(r.end, add_special_tokens=False)),
            reasoning_start="" if opens else r.start,
            reasoning_start_ids=() if opens else tuple(hf.encode(r.start, add_special_tokens=False)),
            max_reasoning_tokens=r.budget,
        )


async def _check(info: ModelInfo, grammar: str, param: str) -> None:
    cache = grammar_cache(info)
    if grammar in cache:
        return
    try:
        await run_in_threadpool(cache.check, grammar)
    except ConstraintError as exc:
        raise bad_request(f"invalid constraint: {exc.message}", param) from None


async def _check_tool_grammar(t: ToolPlan, info: ModelInfo) -> None:
    """A grammar that fails is blamed on the first tool whose own grammar fails."""
    grammar = t.grammar.grammar
    if grammar_error(grammar) is None:
        return
    for i, tool in enumerate(t.tools):
        one = tool_call_grammar(t.parser, [tool], tool_choice="required")
        if (message := grammar_error(one.grammar)) is not None:
            raise bad_request(
                f"tools[{i}].function.parameters is not a JSON schema we can enforce: "
                f"{_first_line(message)}",
                f"tools[{i}].function.parameters",
            )
    raise bad_request(f"the tools make no valid grammar: {_first_line(grammar_error(grammar) or '')}", "tools")


def _first_line(message: str) -> str:
    # llguidance's messages go on with an excerpt of the grammar.
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line.split(": ", 1)[1] if line.startswith("at ") and ": " in line else line
