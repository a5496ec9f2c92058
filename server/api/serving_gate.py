"""Refuses POSTs (classification, reloads) with 503 `starting` or `shutting_down` and
Retry-After while the runtime is not serving; GETs (health, stats, metrics) always pass.

A plain ASGI middleware: it runs on every request, and Starlette's BaseHTTPMiddleware would
add a task group and a stream per request to the hot path.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.errors import error_response
from server.runtime import Runtime


class ServingGateMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        phase = self.runtime.phase
        if scope["type"] != "http" or scope["method"] != "POST" or phase == "serving":
            await self.app(scope, receive, send)
            return
        kind = "starting" if phase == "starting" else "shutting_down"
        retry_after = self.runtime.config.supervisor.retry_after_s
        response = error_response(
            503, kind, f"the server is {phase}; retry later", retry_after_s=retry_after
        )
        await response(scope, receive, send)
