"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from mlx_textgen.api.errors import bad_request
from mlx_textgen.api.generation import ChoiceState
from mlx_textgen.api.protocol import ChatCompletionRequest, ChatMessage
from mlx_textgen.api.routes.common import budget_tokens, resolve_model, run
from mlx_textgen.chat.boundaries import message_boundaries
from mlx_textgen.engine.request import RequestOutput, TokenLogprob

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

    def choice(self, c: ChoiceState) -> dict[str, Any]:
        return {
            "index": c.index,
            "message": {"role": "assistant", "content": "".join(c.text), "refusal": None},
            "logprobs": _logprobs(c.logprobs) if self.want_logprobs else None,
            "finish_reason": c.finish_reason.value if c.finish_reason else None,
        }

    def chunk_choice(self, c: ChoiceState, out: RequestOutput, first: bool) -> dict[str, Any] | None:
        delta: dict[str, Any] = {"role": "assistant", "content": out.text} if first else {}
        if out.text and not first:
            delta["content"] = out.text
        if not delta and not out.finished and not out.logprobs:
            return None
        return {
            "index": c.index,
            "delta": delta,
            "logprobs": _logprobs(out.logprobs) if self.want_logprobs else None,
            "finish_reason": out.finish_reason.value if out.finished else None,
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


def _render_text(info: Any, body: ChatCompletionRequest, messages: list[dict[str, Any]], final: bool) -> str:
    from mlx_textgen.chat.templates import ChatTemplateError, render_chat

    cont = final and messages[-1]["role"] == "assistant"
    tok = info.hf_tokenizer
    preset = info.config.default_template or (None if info.chat_template else "chatml")
    try:
        return render_chat(
            messages,
            chat_template=info.chat_template,
            preset=preset,
            bos_token=tok.bos_token or "",
            eos_token=tok.eos_token or "",
            add_generation_prompt=final and not cont,
            continue_final_message=cont,
            template_kwargs=body.chat_template_kwargs,
        )
    except ChatTemplateError as exc:
        raise bad_request(f"chat template failed: {exc}", "messages") from None


def _render(info: Any, body: ChatCompletionRequest, conversation: list[ChatMessage]) -> tuple[list[int], tuple[int, ...]]:
    """Prompt token ids, and where the system prompt and the earlier turns end in them
    (the prompt cache keeps prefixes there: see mlx_textgen.chat.boundaries)."""
    def encode(msgs: list[dict[str, Any]], final: bool) -> list[int]:
        return info.hf_tokenizer.encode(_render_text(info, body, msgs, final), add_special_tokens=False)

    messages = normalize_messages(conversation)
    ids = encode(messages, True)
    return ids, message_boundaries(messages, ids, encode)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, http: Request) -> Any:
    body.check_supported()
    info = resolve_model(http, body.model)
    rendered = [await run_in_threadpool(_render, info, body, c) for c in body.conversations]
    prompts = [ids for ids, _ in rendered]
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    max_tokens = budget_tokens(info, prompts, body.max_new_tokens, param)
    return await run(
        http, body, info, prompts, max_tokens=max_tokens, logprobs=body.logprobs_k,
        boundaries=[b for _, b in rendered],
        renderer=ChatRenderer(bool(body.logprobs)), body=body,
    )
