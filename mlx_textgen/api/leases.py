"""Hold the request's model for as long as the request lives (loading it first if needed).

A plain ASGI middleware around the generation routes: it reads the body, takes a lease on
the model its `model` field names (engine/registry.py loads the model if it isn't
resident, unloading an idle one to make room), replays the body to the route, and
releases the lease when the response is over, streamed ones included. So a model is never
unloaded between a request's tokenization and its last token, and the routes find their
model loaded without knowing about residency.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlx_textgen.api.errors import APIError, error_response

if TYPE_CHECKING:
    from mlx_textgen.engine.registry import ModelRegistry

LEASED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/cache/warmup"})


def _model_field(body: bytes) -> tuple[bool, str | None]:
    """(whether the body names a model or none, the name); (False, None) when it isn't a
    JSON object with a string or absent `model` (the route then answers the 400)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # too deep: the route answers the 400
        return False, None
    if not isinstance(data, dict):
        return False, None
    model = data.get("model")
    return (model is None or isinstance(model, str)), model if isinstance(model, str) else None


def registry_error(exc: Exception) -> APIError | None:
    """The OpenAI error for a registry exception (None: not one of them)."""
    from mlx_textgen.engine.registry import ModelBusy, ModelUnavailable, NoRoom

    if isinstance(exc, NoRoom):
        return APIError(503, str(exc), code="model_busy",
                        headers={"Retry-After": str(NoRoom.retry_after)})  # fmt: skip
    if isinstance(exc, ModelUnavailable):
        return APIError(500, str(exc), param="model", code=exc.code)
    if isinstance(exc, ModelBusy):
        return APIError(409, str(exc), param="model", code="model_busy")
    return None


class ModelLeases:
    """Takes and releases the registry's lease around each generation request."""

    def __init__(self, app: ASGIApp, registry: ModelRegistry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in LEASED_PATHS:
            return await self.app(scope, receive, send)
        try:
            messages, body = await _read_body(receive)
        except APIError as exc:  # the body limit
            return await error_response(exc)(scope, receive, send)
        named, model = _model_field(body)
        lease = None
        if named:
            try:
                lease = await self.registry.acquire(model)
            except Exception as exc:  # noqa: BLE001 - mapped below, else re-raised
                err = registry_error(exc)
                if err is None:
                    raise
                response = JSONResponse(err.body(), status_code=err.status, headers=err.headers)
                return await response(scope, receive, send)
        try:
            await self.app(scope, _replay(messages, receive), send)
        finally:
            self.registry.release(lease)


async def _read_body(receive: Receive) -> tuple[list[Message], bytes]:
    messages: list[Message] = []
    while True:
        msg = await receive()
        messages.append(msg)
        if msg["type"] != "http.request" or not msg.get("more_body", False):
            break
    return messages, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """The body messages once more, then the real channel (disconnect notices)."""
    pending = list(messages)

    async def replayed() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
