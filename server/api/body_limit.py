"""Refuses request bodies over `limits.max_body_bytes` with 413 `body_too_large`, before
anything parses them: at once by their Content-Length, or (chunked) by counting the bytes as
they arrive, buffered up to the limit and then handed on."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import error_response


def body_too_large(max_body_bytes: int) -> JSONResponse:
    """The 413 of a body over the limit (also the Ray ingress's, which reads bodies itself)."""
    return error_response(413, "body_too_large", f"the request body is over {max_body_bytes} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = body_too_large(self.max_body_bytes)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.isdigit():
                response = error_response(400, "invalid_body", "Content-Length is not a number")
                await response(scope, receive, send)
            elif int(length) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # No Content-Length (chunked, or no body): read it all, counting, before the app runs.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
