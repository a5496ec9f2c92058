"""Resolves every HTTP request's caller before the app sees it; 401 where credentials are
needed and missing or invalid. /health, /health/* and /metrics (unless protected) are open."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.api.auth.authenticator import Authenticator, InvalidCredentialsError
from server.api.auth.principal import ANONYMOUS, OPEN, Principal, set_principal
from server.api.errors import error_response


def is_open_path(path: str, protect_metrics: bool) -> bool:
    """Paths any caller may reach: liveness/readiness probes and (by default) metrics."""
    if path == "/health" or path.startswith("/health/"):
        return True
    return path == "/metrics" and not protect_metrics


class AuthMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, protect_metrics: bool) -> None:
        self.app = app
        self.authenticator = authenticator
        self.protect_metrics = protect_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.authenticator.enabled:
            set_principal(scope, OPEN)
            await self.app(scope, receive, send)
            return
        open_path = is_open_path(scope["path"], self.protect_metrics)
        problem = "credentials are needed: 'Authorization: Bearer <key or JWT>' or 'X-API-Key'"
        principal: Principal | None = None
        try:
            principal = self.authenticator.authenticate(Headers(scope=scope))
        except InvalidCredentialsError as exc:
            problem = str(exc)
        if principal is None and open_path:
            principal = ANONYMOUS
        if principal is None:
            response = error_response(401, "unauthorized", problem)
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        set_principal(scope, principal)
        await self.app(scope, receive, send)
