"""Start the server: the model registry (an engine process per resident model), the API."""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import asynccontextmanager
from typing import Any

from mlx_textgen.config import ServerConfig
from mlx_textgen.vision.media import media_policy
from mlx_textgen.vision.prompt import warm as warm_processor

log = logging.getLogger("mlx_textgen")


class ModelLoadError(RuntimeError):
    """A configured model could not be prepared or loaded."""


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def build_app(cfg: ServerConfig) -> Any:
    """Build the model registry, preload the models marked `preload`, and the ASGI app.

    Raises ModelLoadError (with a one-line reason naming the model) when a preloaded model
    can't be loaded. Models not preloaded load on their first request."""
    from mlx_textgen.api.app import create_app
    from mlx_textgen.cache.manager import CacheOptions
    from mlx_textgen.engine.engine import EngineOptions, EngineStartupError
    from mlx_textgen.engine.registry import ModelRegistry

    api_keys = cfg.all_api_keys()  # a bad key file stops the start before any model loads
    options = EngineOptions(
        cache_root=cfg.resolved_cache_dir(),
        cpu_weights=cfg.cpu_weights,
        max_running_requests=cfg.max_running_requests,
        max_queued_requests=cfg.max_queued_requests,
        request_timeout=cfg.request_timeout,
        blas=cfg.blas,
        kv_headroom_tokens=cfg.kv_headroom_tokens,
        prompt_cache=CacheOptions(
            root=cfg.resolved_cache_dir() / "prompt_cache",
            ram_budget_bytes=int(cfg.cache_ram_gb * (1 << 30)),
            disk_budget_bytes=int(cfg.cache_disk_gb * (1 << 30)),
            min_tokens=cfg.min_tokens,
            max_entries=cfg.max_capacity,
            replace_threshold=cfg.replace_threshold,
            max_reprocess_tokens=cfg.max_reprocess_tokens,
        ),
    )
    registry = ModelRegistry(
        cfg.model_configs,
        options,
        max_loaded_models=cfg.max_loaded_models,
        max_model_memory_gb=cfg.max_model_memory_gb,
        wait_timeout=cfg.model_wait_timeout,
    )
    try:
        registry.preload()
    except EngineStartupError as exc:
        raise ModelLoadError(str(exc)) from None
    app = create_app(
        registry, api_keys, cfg.max_body_bytes,
        admin_keys=list(cfg.admin_api_keys), allowed_origins=list(cfg.allowed_origins),
    )
    app.state.use_reasoning_content = cfg.use_reasoning_content  # chat's default (api/reasoning.py)
    app.state.media_policy = media_policy(cfg)
    for info in registry.models.values():
        if info.vision is not None:
            warm_processor(info.vision)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        registry.attach(asyncio.get_running_loop())
        loaded = ", ".join(registry.models) or "none yet"
        log.info("serving %s (loaded: %s) on http://%s:%d/v1", ", ".join(registry.names), loaded,
                 cfg.host, cfg.port)  # fmt: skip
        yield
        await asyncio.to_thread(registry.stop)
        if (shared := sys.modules.get("mlx_textgen.vision.shared")) is not None:
            shared.close_all()  # images' shared memory (uvicorn re-raises SIGTERM: no atexit)

    app.router.lifespan_context = lifespan
    return app


def run(cfg: ServerConfig) -> None:
    """Serve until interrupted."""
    setup_logging(cfg.log_level)
    import uvicorn

    try:
        app = build_app(cfg)
    except ModelLoadError as exc:
        log.error("could not load %s", exc)
        raise SystemExit(1) from None
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level.lower(), access_log=False)
