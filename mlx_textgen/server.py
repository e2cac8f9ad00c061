"""Start the server: start the engine process, serve the API with uvicorn."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any

from mlx_textgen.config import ServerConfig

log = logging.getLogger("mlx_textgen")


class ModelLoadError(RuntimeError):
    """A configured model could not be prepared or loaded."""


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def build_app(cfg: ServerConfig) -> Any:
    """Load the models in the engine process, then build the ASGI app around the engine.

    Raises ModelLoadError (with a one-line reason) when a model can't be loaded."""
    from mlx_textgen.api.app import create_app
    from mlx_textgen.cache.manager import CacheOptions
    from mlx_textgen.engine.engine import Engine, EngineOptions, EngineStartupError

    engine = Engine(
        cfg.model_configs,
        EngineOptions(
            cache_root=cfg.resolved_cache_dir(),
            cpu_weights=cfg.cpu_weights,
            max_running_requests=cfg.max_running_requests,
            max_queued_requests=cfg.max_queued_requests,
            request_timeout=cfg.request_timeout,
            blas=cfg.blas,
            prompt_cache=CacheOptions(
                root=cfg.resolved_cache_dir() / "prompt_cache",
                ram_budget_bytes=int(cfg.cache_ram_gb * (1 << 30)),
                disk_budget_bytes=int(cfg.cache_disk_gb * (1 << 30)),
                min_tokens=cfg.min_tokens,
                max_entries=cfg.max_capacity,
                replace_threshold=cfg.replace_threshold,
                max_reprocess_tokens=cfg.max_reprocess_tokens,
            ),
        ),
    )
    try:
        engine.load()
    except EngineStartupError as exc:
        engine.stop()
        raise ModelLoadError(str(exc)) from None
    app = create_app(engine, list(cfg.api_keys), cfg.max_body_bytes)
    app.state.use_reasoning_content = cfg.use_reasoning_content  # chat's default (api/reasoning.py)

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        engine.attach(asyncio.get_running_loop())
        log.info("serving %s on http://%s:%d/v1", ", ".join(engine.models), cfg.host, cfg.port)
        yield
        engine.stop()

    app.router.lifespan_context = lifespan
    return app


def run(cfg: ServerConfig) -> None:
    """Serve until interrupted."""
    setup_logging(cfg.log_level)
    import uvicorn

    try:
        app = build_app(cfg)
    except ModelLoadError as exc:
        log.error("could not load the model(s): %s", exc)
        raise SystemExit(1) from None
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level.lower(), access_log=False)
    if not app.state.engine.alive:  # a supervisor should restart us
        raise SystemExit(1)
