"""The FastAPI application: routes, error handlers, and the runtime's start and stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server.api import admin, health
from server.api.dashboard import route as dashboard
from server.api.errors import install_error_handlers
from server.api.metrics_route import install_metrics
from server.api.routes import router
from server.api.security import install_security
from server.api.serving_gate import ServingGateMiddleware
from server.runtime import Runtime

log = logging.getLogger(__name__)

StartFailed = Callable[[BaseException], None]


def create_app(
    runtime: Runtime,
    start_in_background: bool = False,
    on_start_failed: StartFailed | None = None,
) -> FastAPI:
    """With `start_in_background` (the server), the app answers at once: /health/live is 200,
    readiness 503, and every POST a 503 `starting` with Retry-After until the engines are up
    and warm; a failed start is logged and handed to `on_start_failed` (the server exits
    non-zero). Without it (in-process use, tests), the app serves once the start is done, and a
    failed start raises."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not start_in_background:
            try:
                await runtime.start()
                yield
            finally:
                await runtime.stop()  # also after a failed start: no engine is left running
            return
        starting = asyncio.create_task(_start(runtime, on_start_failed), name="runtime-start")
        try:
            yield
        finally:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await runtime.stop()

    app = FastAPI(title="capserve", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime
    install_error_handlers(app)

    app.add_middleware(ServingGateMiddleware, runtime=runtime)  # innermost
    app.include_router(health.router)
    install_security(app, runtime.config)
    app.include_router(router)
    app.include_router(admin.router)
    app.include_router(dashboard.router)
    install_metrics(app, runtime)  # last: its middleware must be the outermost
    return app


async def _start(runtime: Runtime, on_start_failed: StartFailed | None) -> None:
    try:
        await runtime.start()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # The reason (a missing model, a failed warm-up) names capabilities, never text.
        log.error("start-up failed: %s: %s", type(exc).__name__, exc)
        if on_start_failed is not None:
            on_start_failed(exc)
