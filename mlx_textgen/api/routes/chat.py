"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from mlx_textgen.api.chat_plan import ChatPlan
from mlx_textgen.api.errors import bad_request
from mlx_textgen.api.generation import ChoiceState
from mlx_textgen.api.protocol import ChatCompletionRequest, ChatMessage
from mlx_textgen.api.reasoning import plan_reasoning, template_kwargs
from mlx_textgen.api.routes.common import budget_tokens, resolve_model, run
from mlx_textgen.api.tooling import check_tools, messages_for, plan_tools
from mlx_textgen.api.vision_inputs import chat_images
from mlx_textgen.chat.boundaries import message_boundaries
from mlx_textgen.engine.request import FinishReason, RequestOutput, TokenLogprob

router = APIRouter()


def _token_entry(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def _logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            _token_entry(t.text, t.logprob)
            | {"top_logprobs": [_token_entry(text, lp) for _, text, lp in t.top]}
            for t in items
        ],
        "refusal": None,
    }


class ChatRenderer:
    object_name = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def __init__(self, want_logprobs: bool) -> None:
        self.want_logprobs = want_logprobs

    @staticmethod
    def _finish(c: ChoiceState, reason: FinishReason | None) -> str | None:
        if reason is None:
            return None
        # Every mode that produced calls says so (named tool_choice too, as the original did).
        if reason == FinishReason.STOP and c.parser is not None and c.parser.called:
            return "tool_calls"
        return reason.value

    def choice(self, c: ChoiceState) -> dict[str, Any]:
        message = (
            c.parser.message()
            if c.parser is not None
            else {"role": "assistant", "content": "".join(c.text), "refusal": None}
        )
        return {
            "index": c.index,
            "message": message,
            "logprobs": _logprobs(c.logprobs) if self.want_logprobs else None,
            "finish_reason": self._finish(c, c.finish_reason),
        }

    def chunk_choice(self, c: ChoiceState, out: RequestOutput, first: bool) -> dict[str, Any] | None:
        fields = c.parser.take() if c.parser is not None else (
            {"content": out.text} if out.text else {}
        )
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
        delta.update(fields)
        if not delta and not out.finished and not out.logprobs:
            return None
        return {
            "index": c.index,
            "delta": delta,
            "logprobs": _logprobs(out.logprobs) if self.want_logprobs else None,
            "finish_reason": self._finish(c, out.finish_reason) if out.finished else None,
        }


def _content_text(msg: ChatMessage, i: int) -> str | None:
    if msg.content is None or isinstance(msg.content, str):
        return msg.content
    texts = []
    for j, part in enumerate(msg.content):
        if part.type != "text" or part.text is None:
            raise bad_request(
                f"content part type {part.type!r} is not supported by this model; use text parts",
                f"messages[{i}].content[{j}].type",
            )
        texts.append(part.text)
    return "\n".join(texts)


def normalize_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages -> the plain dicts chat templates expect (developer is system)."""
    out = []
    for i, msg in enumerate(messages):
        content = _content_text(msg, i)
        if content is None and msg.role != "assistant":
            raise bad_request(f"messages[{i}] ({msg.role}) needs content", f"messages[{i}].content")
        if msg.role == "tool" and not msg.tool_call_id:
            raise bad_request("a tool message needs `tool_call_id`", f"messages[{i}].tool_call_id")
        item: dict[str, Any] = {
            "role": "system" if msg.role == "developer" else msg.role,
            "content": content if content is not None else "",
        }
        for key in ("name", "tool_call_id", "tool_calls"):
            if getattr(msg, key) is not None:
                item[key] = getattr(msg, key)
        out.append(item)
    return out


def _render_text(
    info: Any, body: ChatCompletionRequest, messages: list[dict[str, Any]], final: bool,
    tools: list[dict[str, Any]] | None = None, kwargs: dict[str, Any] | None = None,
) -> str:
    from mlx_textgen.chat.templates import ChatTemplateError
    from mlx_textgen.chat.tools import render_with_tools

    cont = final and messages[-1]["role"] == "assistant"
    tok = info.hf_tokenizer
    preset = info.config.default_template or (None if info.chat_template else "chatml")
    try:
        return render_with_tools(
            messages,
            chat_template=info.chat_template,
            tools=tools,
            preset=preset,
            bos_token=tok.bos_token or "",
            eos_token=tok.eos_token or "",
            add_generation_prompt=final and not cont,
            continue_final_message=cont,
            template_kwargs=kwargs,
        )
    except ChatTemplateError as exc:
        raise bad_request(f"chat template failed: {exc}", "messages") from None


def _render(
    info: Any, body: ChatCompletionRequest, conversation: list[ChatMessage]
) -> tuple[list[int], tuple[int, ...]]:
    """Prompt token ids, and where the system prompt and the earlier turns end in them
    (the prompt cache keeps prefixes there: see mlx_textgen.chat.boundaries); no tools."""
    ids, bounds, _ = _render_prompt(info, body, conversation, ChatPlan(None, None, []))
    return ids, bounds


def _render_prompt(
    info: Any, body: ChatCompletionRequest, conversation: list[ChatMessage], plan: ChatPlan
) -> tuple[list[int], tuple[int, ...], bool]:
    """As ``_render`` with the request's tools and reasoning, and whether the prompt leaves
    the model inside its thinking."""
    messages, tools = messages_for(plan.tools, normalize_messages(conversation), info)
    kwargs = template_kwargs(plan.reasoning, body)

    def text(msgs: list[dict[str, Any]], final: bool) -> str:
        rendered = _render_text(info, body, msgs, final, tools, kwargs)
        if final and plan.reasoning is not None and plan.reasoning.off:
            rendered = plan.reasoning.closed(rendered)
        return rendered

    def encode(msgs: list[dict[str, Any]], final: bool) -> list[int]:
        return info.hf_tokenizer.encode(text(msgs, final), add_special_tokens=False)

    prompt = text(messages, True)
    ids = info.hf_tokenizer.encode(prompt, add_special_tokens=False)
    opens = plan.reasoning is not None and plan.reasoning.opens(prompt)
    return ids, message_boundaries(messages, ids, encode), opens


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, http: Request) -> Any:
    body.check_supported()
    check_tools(body)
    info = resolve_model(http, body.model)
    default = bool(getattr(http.app.state, "use_reasoning_content", False))
    plan = ChatPlan(plan_tools(body, info), plan_reasoning(body, info, default), [])
    images = await chat_images(info, body.conversations, getattr(http.app.state, "media_policy", None))
    conversations = images.conversations if images is not None else body.conversations
    rendered = [await run_in_threadpool(_render_prompt, info, body, c, plan) for c in conversations]
    media = None
    if images is not None:
        rendered, media = await images.expand(info, rendered)
    plan.opens = [opens for _, _, opens in rendered]
    prompts = [ids for ids, _, _ in rendered]
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    max_tokens = budget_tokens(info, prompts, body.max_new_tokens, param)
    return await run(
        http, body, info, prompts, max_tokens=max_tokens, logprobs=body.logprobs_k,
        boundaries=[b for _, b, _ in rendered],
        renderer=ChatRenderer(bool(body.logprobs)), body=body,
        adjust=lambda params: plan.params(params, info), new_parser=plan.new_parser,
        media=media,
    )
