"""GET /v1/models, /v1/models/{id}; admin POST /v1/models/{id}/load and /unload.

Every configured model is listed, loaded or not (`loaded`, `state`); the admin routes sit
under /v1 like the cache admin routes, so the API keys guard them too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mlx_textgen.api.errors import APIError
from mlx_textgen.api.leases import registry_error
from mlx_textgen.api.routes.common import engine_of, unknown_model

router = APIRouter()


@router.get("/v1/models")
async def list_models(http: Request) -> dict[str, Any]:
    reg = engine_of(http)
    return {"object": "list", "data": [reg.card(s) for s in reg.slots]}


@router.post("/v1/models/{model_id:path}/load")
async def load_model(model_id: str, http: Request) -> dict[str, Any]:
    """Load a model now (making room as a request would); answers once it is loaded."""
    from mlx_textgen.engine.registry import ModelUnavailable

    reg = engine_of(http)
    try:
        slot = await reg.load_model(model_id)
    except ModelUnavailable as exc:  # the model the operator named can't be loaded: a 422
        raise APIError(422, str(exc), param="model", code=exc.code) from None
    except Exception as exc:  # noqa: BLE001 - registry errors become OpenAI errors
        raise registry_error(exc) or exc from None
    if slot is None:
        raise unknown_model(http, model_id)
    return reg.card(slot)


@router.post("/v1/models/{model_id:path}/unload")
async def unload_model(model_id: str, http: Request) -> dict[str, Any]:
    """Unload a model now; 409 while it has requests or is pinned."""
    reg = engine_of(http)
    try:
        slot = await reg.unload_model(model_id)
    except Exception as exc:  # noqa: BLE001 - registry errors become OpenAI errors
        raise registry_error(exc) or exc from None
    if slot is None:
        raise unknown_model(http, model_id)
    return reg.card(slot)


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, http: Request) -> dict[str, Any]:
    reg = engine_of(http)
    slot = reg.resolve(model_id)
    if slot is None:
        raise unknown_model(http, model_id)
    return reg.card(slot)

