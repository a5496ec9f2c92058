"""An ASGI middleware that times every HTTP request by route template and status, and counts
error responses by their `error.type`.

The route label is the matched route's template (e.g. /admin/reload), never the raw path, and
"unmatched" when no route matched. The error code is read from the JSON error envelope of a
response with status >= 400 (see server/api/errors.py); a response without one counts as
http_<status>. An exception that escapes the app is answered 500 `internal_error` by the
server's outermost handler and is counted so here; a request cancelled before any answer (the
client left) is timed under status 499.
"""

from __future__ import annotations

import json
import time
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"
# The status label of a request cancelled before any answer (the client left).
CLIENT_GONE = 499
# The error.type of server/api/errors.py for an exception no other handler maps.
INTERNAL_ERROR = "internal_error"
# Error bodies are small: one larger than this is not read for its type.
MAX_ERROR_BODY = 64 * 1024


class RequestRecorder(Protocol):
    def request_finished(self, route: str, status: int, seconds: float) -> None: ...

    def error_returned(self, code: str) -> None: ...


def route_template(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED


def error_code(status: int, body: bytes) -> str:
    """The error envelope's `error.type`, or http_<status> when the body has none."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) and kind else f"http_{status}"


class _Response:
    """What the middleware saw of one response."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.error_body: bytearray | None = None  # read only for an error status

    def seen(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            if self.status >= 400:
                self.error_body = bytearray()
        elif message["type"] == "http.response.body" and self.error_body is not None:
            chunk = message.get("body", b"")
            if len(self.error_body) + len(chunk) <= MAX_ERROR_BODY:
                self.error_body.extend(chunk)


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, recorder: RequestRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        response = _Response()
        recorded = False

        async def watched_send(message: Message) -> None:
            nonlocal recorded
            response.seen(message)
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and not recorded:
                # Recorded before the last byte leaves: a client that reads /metrics right
                # after its answer finds the request counted.
                recorded = True
                self._record(scope, response, False, time.perf_counter() - started)
            await send(message)

        escaped = False
        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            escaped = response.status is None  # the outermost handler answers it 500
            raise
        finally:
            if not recorded:
                self._record(scope, response, escaped, time.perf_counter() - started)

    def _record(self, scope: Scope, response: _Response, escaped: bool, seconds: float) -> None:
        if escaped:
            status, code = 500, INTERNAL_ERROR
        elif response.status is None:
            status, code = CLIENT_GONE, None  # cancelled before any answer
        else:
            status = response.status
            body = response.error_body
            code = None if body is None else error_code(status, bytes(body))
        self.recorder.request_finished(route_template(scope), status, seconds)
        if code is not None:
            self.recorder.error_returned(code)
