"""The gateway's HTTP API (FastAPI): OpenAI-compatible chat with video, files, health, metrics.

A chat request's video (a file id, a data URL or an https URL) is prepared here, in the
decode workers, and forwarded to vLLM as the plugin's prepared container (a data: URL, or
a file:// URL in a folder the engine shares in `--forward-mode shared`), so vLLM never
sees the user's file. This module only wires the app: the shared state
(`server.state`), its start and stop, the request log, the error handlers and the routers
(`server.routes`: chat, files, health; `server.playground`: the page to try it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import playground
from .config import Settings
from .errors import install_error_handlers
from .request_log import RequestLog
from .routes import batches, chat, files, health
from .state import Gateway, public_model_name

__all__ = ["Gateway", "Settings", "create_app", "public_model_name"]

log = logging.getLogger("arc.gateway")


def create_app(settings: Settings) -> FastAPI:
    gateway = Gateway(settings)
    metrics = gateway.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        ready = {
            "event": "ready",
            "upstream": settings.upstream_url,
            "forward_mode": settings.forward_mode,
            "decode_workers": settings.decode_workers,
        }
        log.info(json.dumps(ready))
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="arc-video-serve gateway",
        description="OpenAI-compatible chat about videos (ARC-Hunyuan-Video) in front of vLLM.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(RequestLog, metrics=metrics)
    install_error_handlers(app, on_error=lambda code: metrics.rejections.labels(code).inc())
    routers = [module.router for module in (health, files, chat, batches, playground)]
    for router in routers:
        app.include_router(router)
    # The paths are read off our routers: newer FastAPI releases nest included routers in
    # app.routes as objects without a path.
    paths = [route.path for router in routers for route in router.routes]
    metrics.create_labels([path for path in paths if path not in ("/metrics", "/health")])
    return app
