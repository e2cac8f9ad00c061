"""The FastAPI app: routes, OpenAI-style errors, API keys and the request size limit."""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from mlx_textgen.api import constraints
from mlx_textgen.api.body import BodyGuard
from mlx_textgen.api.errors import (
    APIError, ClientGone, error_body, error_response, internal_error,
)
from mlx_textgen.api.leases import ModelLeases
from mlx_textgen.api.routes import cache, chat, completions, models

if TYPE_CHECKING:
    from mlx_textgen.engine.registry import ModelRegistry


log = logging.getLogger("mlx_textgen.api")

_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _is_union_tag(part: Any) -> bool:
    # pydantic names the union member that failed ("str", "list[int]", "function-after[..]").
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS)


def _param(loc: tuple[Any, ...]) -> str | None:
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if _is_union_tag(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    param = _param(loc)
    kind = err.get("type", "")
    if kind == "json_invalid":
        return "We could not parse the JSON body of your request: invalid JSON.", None
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if kind == "missing" and not param:
        return "The request body is empty; it must be a JSON object.", None
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param
    if kind in ("model_attributes_type", "dict_type") and not param:
        return "The request body must be a JSON object.", None
    if any(_is_union_tag(p) for p in loc) and kind.endswith("_type"):
        return f"Invalid type for '{param}'.", param
    return f"Invalid value for '{param}': {err.get('msg', 'invalid')}.", param


def _key_ok(given: str, keys: list[str]) -> bool:
    # Compare against every key so timing says nothing about which one (or none) matched.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode(), key.encode())
    return ok


def _presented_key(headers: dict[bytes, bytes]) -> str:
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get(b"x-api-key", b"").decode("latin-1")


OPEN_PATHS = frozenset({"/health"})  # a load balancer's probe needs no key


def is_admin_route(method: str, path: str) -> bool:
    """Cache admin (/v1/cache...) and model load/unload: with admin keys set, only they may."""
    if path == "/v1/cache" or path.startswith("/v1/cache/"):
        return True
    return method == "POST" and path.startswith("/v1/models/") and path.endswith(("/load", "/unload"))


class APIKeys:
    """401 for requests without a valid key, on every route but /health (/openapi.json and
    unknown paths included); 403 for admin routes without an admin key when admin keys are
    set. Admin keys are API keys too. A plain ASGI middleware: Starlette's
    BaseHTTPMiddleware would relay every streamed chunk through an extra task and queue."""

    def __init__(self, app: ASGIApp, keys: list[str], admin_keys: list[str] | None = None) -> None:
        self.app = app
        self.admin_keys = list(admin_keys or [])
        self.keys = list(keys) + self.admin_keys if keys else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)  # OPTIONS: CORS preflights carry no key
        given = _presented_key(dict(scope.get("headers", [])))
        if self.keys and not _key_ok(given, self.keys):
            return await _deny(scope, receive, send, 401, "Invalid or missing API key.")
        if self.admin_keys and is_admin_route(scope["method"], scope["path"]):
            if not _key_ok(given, self.admin_keys):
                return await _deny(scope, receive, send, 403, "This route needs an admin API key.")
        await self.app(scope, receive, send)


async def _deny(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    response = JSONResponse(error_body(status, message, code="invalid_api_key"), status_code=status)
    await response(scope, receive, send)


def create_app(
    engine: ModelRegistry,
    api_keys: list[str],
    max_body_bytes: int,
    *,
    admin_keys: list[str] | None = None,
    allowed_origins: list[str] | None = None,
) -> FastAPI:
    """The app around the model registry (`app.state.engine`: the routes' one door to the
    engines, whichever models are loaded). CORS is off unless `allowed_origins` names some."""
    app = FastAPI(title="mlx-textgen", docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.keyed = bool(api_keys)  # a key is a client (api/clients.py)
    constraints.warm(engine.models.values())

    @app.exception_handler(APIError)
    async def on_api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return JSONResponse(error_body(400, message, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "Not found." if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code)

    @app.exception_handler(ClientGone)
    async def on_gone(_: Request, exc: ClientGone) -> Response:
        # Nobody reads this answer (499 is nginx's "client closed request"); no traceback.
        log.debug("client of %s disconnected; its generation was aborted", exc)
        return Response(status_code=499)

    @app.exception_handler(RecursionError)
    async def on_deep(_: Request, exc: RecursionError) -> JSONResponse:
        # Python's json decoder recurses per level: a body nested thousands deep ends here.
        return JSONResponse(error_body(400, "The JSON body is nested too deeply."), status_code=400)

    @app.exception_handler(Exception)
    async def on_crash(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's fault: the details go to the log under an id, never out.
        return error_response(internal_error(exc, "unhandled error in a route"))

    @app.get("/health")
    async def health(memory: bool = False) -> Any:
        # The server is up while it can answer: a model whose engine died is unloaded and
        # loads again on its next request (its state says so here). `memory`: ask each
        # engine for its memory now (between its steps), not as of its load.
        if memory:
            await engine.refresh_memory()
        return {
            "status": "ok",
            "in_flight": engine.in_flight,
            "stats": engine.stats,
            **engine.health(),
        }

    app.include_router(models.router)
    app.include_router(completions.router)
    app.include_router(chat.router)
    app.include_router(cache.router)
    app.add_middleware(ModelLeases, registry=engine)  # inside APIKeys: no key, no load
    app.add_middleware(APIKeys, keys=api_keys, admin_keys=admin_keys)
    if allowed_origins:  # outside the keys: a preflight gets its answer without one
        app.add_middleware(
            CORSMiddleware, allow_origins=list(allowed_origins), allow_methods=["*"],
            allow_headers=["*"], max_age=600,
        )
    app.add_middleware(BodyGuard, max_bytes=max_body_bytes)  # outermost: runs first
    return app
