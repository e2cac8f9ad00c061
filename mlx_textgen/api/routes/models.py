"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mlx_textgen.api.routes.common import engine_of, resolve_model

router = APIRouter()


def _card(info: Any) -> dict[str, Any]:
    return {"id": info.name, "object": "model", "created": info.created, "owned_by": "mlx_textgen"}


@router.get("/v1/models")
async def list_models(http: Request) -> dict[str, Any]:
    return {"object": "list", "data": [_card(i) for i in engine_of(http).models.values()]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, http: Request) -> dict[str, Any]:
    return _card(resolve_model(http, model_id))
