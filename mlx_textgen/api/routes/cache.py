"""Prompt cache admin: GET /v1/cache, DELETE /v1/cache, POST /v1/cache/warmup."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from mlx_textgen.api.errors import APIError, bad_request, internal_error
from mlx_textgen.api.protocol import ChatCompletionRequest, ChatMessage
from mlx_textgen.api.routes.chat import _render
from mlx_textgen.api.routes.common import engine_of, resolve_model, vocab_size
from mlx_textgen.engine.engine import Overloaded
from mlx_textgen.engine.request import FinishReason
from mlx_textgen.engine.request import Request as EngineRequest
from mlx_textgen.engine.request import SamplingParams

router = APIRouter()


@router.get("/v1/cache")
async def list_cache(http: Request) -> dict[str, Any]:
    engine = engine_of(http)
    entries = await engine.call("cache_entries")
    per_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        per_model[e["model"]].append(e)
    data = [
        {
            "model": model,
            "entries": items,
            "bytes_ram": sum(e["bytes_ram"] for e in items),
            "bytes_disk": sum(e["bytes_disk"] for e in items),
        }
        for model, items in per_model.items()
    ]
    return {"object": "list", "data": data}


@router.delete("/v1/cache")
async def clear_cache(http: Request, model: str | None = None) -> dict[str, Any]:
    info = resolve_model(http, model) if model is not None else None
    removed = await engine_of(http).call("cache_clear", info.name if info is not None else None)
    return {"object": "cache.deleted", "model": model, "deleted": removed}


class WarmupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: StrictStr | None = None
    prompt: StrictStr | list[StrictInt] | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None


@router.post("/v1/cache/warmup")
async def warmup(body: WarmupRequest, http: Request) -> dict[str, Any]:
    """Prefill a prompt (text, token ids, or chat messages) into the cache; generate nothing."""
    info = resolve_model(http, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise bad_request("give exactly one of `prompt` and `messages`", "prompt")
    bounds: tuple[int, ...] = ()
    if body.messages is not None:
        chat = ChatCompletionRequest(messages=body.messages, model=body.model)
        ids, bounds = await run_in_threadpool(_render, info, chat, chat.conversations[0])
    elif isinstance(body.prompt, str):
        ids = info.hf_tokenizer.encode(body.prompt)
    else:
        ids = list(body.prompt or [])
        vocab = vocab_size(info)
        if any(not 0 <= t < vocab for t in ids):
            raise bad_request(f"token ids must be in 0..{vocab - 1} (this model's vocabulary)", "prompt")
    if len(ids) < 2 or len(ids) >= info.context_length:
        raise bad_request("the prompt must have 2 tokens or more and fit the context", "prompt")
    req = EngineRequest(f"warmup-{id(body)}", ids, SamplingParams(max_tokens=1), info.name,
                        boundaries=bounds, prefill_only=True)
    try:
        stream = engine_of(http).open([req])
    except Overloaded as exc:
        raise APIError(503, str(exc), code="server_overloaded", headers={"Retry-After": "1"}) from None
    out = None
    async for _, out in stream:
        if out.finish_reason == FinishReason.ERROR:
            if out.error_status < 500:
                raise APIError(out.error_status, out.error or "warm-up failed")
            raise internal_error(out.error or "warm-up failed", f"warm-up {req.request_id} failed")
    return {"object": "cache.warmup", "model": info.name, "prompt_tokens": len(ids),
            "cached_tokens": out.cached_tokens if out else 0}
