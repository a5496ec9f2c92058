"""The FastAPI application: routes, error handlers, and the runtime's start and stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from server.api import admin, health
from server.api.errors import error_response, install_error_handlers
from server.api.metrics_route import install_metrics
from server.api.routes import router
from server.api.security import install_security
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

    @app.middleware("http")
    async def refuse_work_until_serving(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """POSTs (classification, reloads) need the runtime serving; GETs always answer."""
        if request.method == "POST" and runtime.phase != "serving":
            kind = "starting" if runtime.phase == "starting" else "shutting_down"
            response = error_response(503, kind, f"the server is {runtime.phase}; retry later")
            response.headers["Retry-After"] = str(runtime.config.supervisor.retry_after_s)
            return response
        return await call_next(request)

    app.include_router(health.router)
    install_security(app, runtime.config)
    app.include_router(router)
    app.include_router(admin.router)
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
