"""The FastAPI application: routes, error handlers, and the runtime's start and stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server.api import admin
from server.api.errors import install_error_handlers
from server.api.metrics_route import install_metrics
from server.api.routes import router
from server.api.security import install_security
from server.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await runtime.start()
            yield
        finally:
            await runtime.stop()  # also after a failed start: no engine is left running

    app = FastAPI(title="capserve", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime
    install_error_handlers(app)
    install_security(app, runtime.config)
    app.include_router(router)
    app.include_router(admin.router)
    install_metrics(app, runtime)  # last: its middleware must be the outermost
    return app
