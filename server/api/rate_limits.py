"""Per-caller request rates (slowapi's limiter, its moving-window strategy, in memory).

An authenticated caller is limited per tenant (its key's `rate_limit`, else
`rate_limits.per_key`); an anonymous one (auth off) per client address with
`rate_limits.anonymous` (null: unlimited). /health, /health/* and /metrics are never limited.
Over the limit: 429 `rate_limited` with Retry-After (seconds), before the body is read.
"""

from __future__ import annotations

import math
import time
from functools import cache

import limits
from slowapi import Limiter
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.config import RateLimitConfig
from server.api.auth.principal import ANONYMOUS, Principal
from server.api.errors import error_response


def _principal(scope: Scope) -> Principal:
    principal: Principal = scope.get("state", {}).get("principal", ANONYMOUS)
    return principal


def caller_key(request: Request) -> str:
    """The identity a limit counts against: the tenant, or the client address."""
    principal = _principal(request.scope)
    if principal.authenticated:
        return f"tenant:{principal.tenant}"
    return f"address:{request.client.host if request.client else 'unknown'}"


@cache
def _parsed(rate: str) -> limits.RateLimitItem:
    return limits.parse(rate)


def _exempt(path: str) -> bool:
    return path == "/health" or path.startswith("/health/") or path == "/metrics"


class RateLimitMiddleware:
    """Runs after authentication (it reads `request.state.principal`)."""

    def __init__(self, app: ASGIApp, config: RateLimitConfig) -> None:
        self.app = app
        self.config = config
        self.limiter = Limiter(
            key_func=caller_key, strategy="moving-window", enabled=config.enabled
        )

    def _rate(self, principal: Principal) -> str | None:
        if principal.authenticated:
            return principal.rate_limit or self.config.per_key
        return self.config.anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limiter.enabled or _exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        rate = self._rate(_principal(scope))
        if rate is not None:
            item = _parsed(rate)
            key = caller_key(Request(scope))
            # In memory: a dictionary update, never a wait on the event loop.
            if not self.limiter.limiter.hit(item, key):
                reset_at = self.limiter.limiter.get_window_stats(item, key).reset_time
                retry_after = max(1, math.ceil(reset_at - time.time()))
                message = f"over this caller's rate limit of {rate}; retry later"
                response = error_response(429, "rate_limited", message, retry_after_s=retry_after)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
