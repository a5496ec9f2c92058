"""Resolves every HTTP request's caller before the app sees it; 401 where credentials are
needed and missing or invalid. /health, /health/* and /metrics (unless protected) are open.

Under the `basic_paths` prefixes (the operator dashboard) the credential may also come as HTTP
Basic, and a 401 there challenges with `Basic realm="capserve"`: a browser cannot add a header
to a navigation, but it prompts for Basic credentials once and resends them to the page's own
fetches. Only there: a browser resends cached Basic credentials to cross-site requests too, so
they are accepted only on read-only GET routes whose answers another site cannot read."""

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
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        protect_metrics: bool,
        basic_paths: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.protect_metrics = protect_metrics
        self.basic_paths = basic_paths

    def accepts_basic(self, path: str) -> bool:
        return any(path == p or path.startswith(f"{p}/") for p in self.basic_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.authenticator.enabled:
            set_principal(scope, OPEN)
            await self.app(scope, receive, send)
            return
        open_path = is_open_path(scope["path"], self.protect_metrics)
        basic = self.accepts_basic(scope["path"])
        problem = "credentials are needed: 'Authorization: Bearer <key or JWT>' or 'X-API-Key'"
        if basic:
            problem += ", or HTTP Basic with the key as the password"
        principal: Principal | None = None
        try:
            principal = self.authenticator.authenticate(Headers(scope=scope), basic=basic)
        except InvalidCredentialsError as exc:
            problem = str(exc)
        if principal is None and open_path:
            principal = ANONYMOUS
        if principal is None:
            response = error_response(401, "unauthorized", problem)
            challenge = 'Basic realm="capserve", charset="UTF-8"' if basic else "Bearer"
            response.headers["WWW-Authenticate"] = challenge
            await response(scope, receive, send)
            return
        set_principal(scope, principal)
        await self.app(scope, receive, send)
