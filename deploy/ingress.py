"""The HTTP entry of capserve on Ray Serve: it reads a request's body, computes its texts'
affinity key, and forwards the request unchanged to a replica through a DeploymentHandle,
whose request router (`deploy.affinity_router`) picks the replica. It parses nothing else and
answers nothing itself but liveness, the body limit, and the 503 when no replica could answer.

A replica that dies under a request (its actor killed, its node lost) costs the caller nothing
but time: the request goes to another replica, up to `ray.retries` times, then the caller gets a
503 with Retry-After. Requests are idempotent (classification), so a retry is safe."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle

from deploy.forwarding import ForwardedRequest, ForwardedResponse, affinity_key
from server.api.body_limit import body_too_large
from server.api.errors import error_response

log = logging.getLogger(__name__)

REPLICA_HEADER = "X-Capserve-Replica"
# A replica that died: another may answer. Back pressure: every replica and the queue are full.
_REPLICA_LOST = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
# Before a retry, so that the router learns a dead replica is gone.
_RETRY_PAUSE_S = 0.5

app = FastAPI(title="capserve on Ray Serve", docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/health/live")
async def live() -> dict[str, str]:
    """The ingress answers: the proxy and this deployment are up (a replica's readiness is
    /health/ready, forwarded)."""
    return {"status": "ok"}


async def _read_body(request: Request, limit: int) -> bytes | Response:
    """The whole body, or the 413 the single server gives past `limits.max_body_bytes`."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


# Everything the routes use is defined above: serve.ingress serializes the app (and the
# globals its routes refer to) when the class is decorated.
@serve.ingress(app)
class CapserveIngress:
    def __init__(
        self,
        replicas: DeploymentHandle[Any],
        retries: int,
        retry_after_s: int,
        max_body_bytes: int,
    ) -> None:
        self._replicas = replicas
        self._retries = retries
        self._retry_after_s = retry_after_s
        self._max_body_bytes = max_body_bytes

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def forward(self, request: Request, path: str) -> Response:
        body = await _read_body(request, self._max_body_bytes)
        if isinstance(body, Response):
            return body
        forwarded = ForwardedRequest(
            method=request.method,
            path="/" + path,
            query=request.url.query.encode("latin-1"),
            headers=tuple(request.headers.raw),
            body=body,
        )
        key = affinity_key(forwarded.path, body)
        for attempt in range(self._retries + 1):
            try:
                answer: ForwardedResponse = await self._replicas.handle.remote(
                    forwarded, affinity=key
                )
            except BackPressureError:
                return self._unavailable("every replica is at capacity")
            except _REPLICA_LOST as exc:
                log.warning(
                    "replica lost under a request (%s), attempt %d of %d",
                    type(exc).__name__,
                    attempt + 1,
                    self._retries + 1,
                )
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            response = Response(content=answer.body, status_code=answer.status)
            for name, value in answer.headers:
                response.headers.append(name, value)
            response.headers[REPLICA_HEADER] = answer.replica
            return response
        return self._unavailable("no replica could answer; retry")

    def _unavailable(self, message: str) -> Response:
        return error_response(503, "unavailable", message, retry_after_s=self._retry_after_s)
