"""One access-log line per request, replacing uvicorn's: request id (also sent back as
X-Request-ID), tenant, method, route path, status, latency and the sizes of both bodies.

Never the query string, a body, or a header value other than a well-formed X-Request-ID."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.auth.principal import ANONYMOUS_TENANT

log = logging.getLogger("capserve.access")
REQUEST_ID_HEADER = "X-Request-ID"
# A client's own request id is kept only when it looks like an id (no text smuggled into logs).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MAX_PATH_CHARS = 200


def request_id_for(headers: Headers) -> str:
    given = headers.get(REQUEST_ID_HEADER)
    return given if given is not None and _REQUEST_ID.match(given) else uuid.uuid4().hex


def route_path(scope: Scope) -> str:
    """The matched route's template (e.g. /admin/reload), else the path, cut; no query."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    path: str = scope.get("path", "")
    return path[:_MAX_PATH_CHARS]


class AccessLogMiddleware:
    """The outermost middleware: it sees every answer, 401, 413 and 429 included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_for(Headers(scope=scope))
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        sizes = {"request": 0, "response": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                sizes["request"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            elif message["type"] == "http.response.body":
                sizes["response"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            principal = scope.get("state", {}).get("principal")
            fields = {
                "request_id": request_id,
                "tenant": getattr(principal, "tenant", ANONYMOUS_TENANT),
                "method": scope["method"],
                "path": route_path(scope),
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "request_bytes": sizes["request"],
                "response_bytes": sizes["response"],
            }
            log.info("%s %s %d", fields["method"], fields["path"], status, extra={"fields": fields})
