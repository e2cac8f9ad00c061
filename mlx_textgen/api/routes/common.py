"""What both generation endpoints do: resolve the model, size the request, submit it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from mlx_textgen.api.clients import client_id
from mlx_textgen.api.constraints import checked_constraint
from mlx_textgen.api.errors import APIError, bad_request
from mlx_textgen.api.generation import Job, Renderer, collect, stream_sse, usage
from mlx_textgen.api.protocol import _Common, to_sampling_params
from mlx_textgen.engine.engine import Overloaded, TooManyChoices
from mlx_textgen.engine.request import SamplingParams
from mlx_textgen.guided.forms import JsonStyle

if TYPE_CHECKING:
    from mlx_textgen.engine.registry import ModelRegistry
    from mlx_textgen.models.loader import ModelInfo


def engine_of(http: HTTPRequest) -> ModelRegistry:
    return http.app.state.engine


def unknown_model(http: HTTPRequest, name: str) -> APIError:
    return APIError(
        404,
        f"The model `{name}` does not exist. Available: {', '.join(engine_of(http).names)}",
        param="model",
        code="model_not_found",
    )


def resolve_model(http: HTTPRequest, name: str | None) -> ModelInfo:
    """The model a request names (its own name or an alias; None: the first configured).

    Generation requests hold a lease on it (api/leases.py), so it is loaded; elsewhere a
    model not loaded now is a 409."""
    slot = engine_of(http).resolve(name)
    if slot is None:
        raise unknown_model(http, name or "")
    if slot.info is None:
        raise APIError(
            409,
            f"The model `{slot.name}` is not loaded; send it a request or "
            f"POST /v1/models/{slot.name}/load first.",
            param="model",
            code="model_not_loaded",
        )
    return slot.info


def json_style(http: HTTPRequest) -> JsonStyle:
    """How constrained JSON is laid out unless a request says (compact by default)."""
    return getattr(http.app.state, "json_style", None) or JsonStyle()


def vocab_size(info: ModelInfo) -> int:
    return len(info.hf_tokenizer)


def budget_tokens(info: ModelInfo, prompts: list[list[int]], requested: int | None, param: str) -> int:
    """max_tokens: as asked, else what is left of the context; 400 if it can't fit."""
    longest = max(len(p) for p in prompts)
    room = info.context_length - longest
    if room <= 0:
        raise bad_request(
            f"The prompt has {longest} tokens; this model's context window is "
            f"{info.context_length} tokens.",
            "messages" if param == "max_completion_tokens" else "prompt",
            "context_length_exceeded",
        )
    if requested is None:
        return room
    if requested > room:
        raise bad_request(
            f"This model's context window is {info.context_length} tokens; the prompt has "
            f"{longest} and {param} asks for {requested}, {longest + requested} in all.",
            param,
            "context_length_exceeded",
        )
    return requested


async def run(
    http: HTTPRequest,
    req: _Common,
    info: ModelInfo,
    prompts: list[list[int]],
    *,
    max_tokens: int,
    logprobs: int | None,
    renderer: Renderer,
    body: Any,
    boundaries: list[tuple[int, ...]] | None = None,
    adjust: Callable[[SamplingParams], Awaitable[SamplingParams]] | None = None,
    new_parser: Callable[[int], Any] | None = None,
    media: list[Any] | None = None,
) -> Any:
    """Submit prompts x n and answer with a JSON body or an SSE stream."""
    if req.stream_options is not None and not req.stream:  # as OpenAI answers
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    params = to_sampling_params(
        req,
        max_tokens=max_tokens,
        logprobs=logprobs,
        defaults=info.generation_defaults,
        vocab_size=vocab_size(info),
    )
    constraint = await checked_constraint(req, info, json_style(http))
    if constraint is not None:
        params = replace(params, grammar=constraint.grammar)
    if adjust is not None:  # the chat endpoint's tools and reasoning
        params = await adjust(params)
    job = Job(model=info.name, prompts=prompts, n=req.choices, params=params,
              boundaries=boundaries or [() for _ in prompts], new_parser=new_parser)
    requests = job.requests()
    for k, r in enumerate(requests):  # prompt i's n choices are requests i*n .. i*n+n-1
        r.media = media[k // req.choices] if media else None
    try:
        stream = engine_of(http).open(requests, client_id(http))
    except TooManyChoices as exc:
        raise bad_request(str(exc), "n") from None
    except Overloaded as exc:
        raise APIError(503, str(exc), code="server_overloaded", headers={"Retry-After": "1"}) from None

    def base() -> dict[str, Any]:
        return {
            "id": job.response_id,
            "object": renderer.chunk_object,
            "created": job.created,
            "model": info.name,
            "system_fingerprint": None,
        }

    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            stream_sse(stream, job, renderer, include_usage, base),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    states = await collect(stream, job, http)
    return JSONResponse(
        base()
        | {
            "object": renderer.object_name,
            "choices": [renderer.choice(c) for c in states],
            "usage": usage(states),
        }
    )
