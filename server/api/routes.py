"""HTTP endpoints. They validate, call the runtime, and shape responses; no engine code here."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from schemas.api import (
    CapabilitiesResponse,
    CapabilityBody,
    ClassifyRequest,
    ClassifyResponse,
    LabelBody,
    Priority,
    SingleClassifyRequest,
    SingleClassifyResponse,
)
from server.api.auth.permissions import authorize_capabilities
from server.api.auth.principal import principal_of
from server.api.disconnect import ClientDisconnectedError, unless_disconnected
from server.api.errors import error_response
from server.api.response_bodies import result_body, text_body, window_body
from server.execution.answer import JobResult
from server.observability.stats import engine_status_section
from server.runtime import Runtime
from server.validation import RequestRejectedError

router = APIRouter()
MODE_HEADER = "X-Capserve-Batching"


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _mode(runtime: Runtime, header: str | None) -> str | None:
    if header is None:
        return None
    if not runtime.config.batching.allow_mode_header:
        raise RequestRejectedError(
            MODE_HEADER, "is not enabled on this server (batching.allow_mode_header: false)"
        )
    if header not in runtime.dispatchers:
        raise RequestRejectedError(MODE_HEADER, f"must be one of {sorted(runtime.dispatchers)}")
    return header


def _json(body: BaseModel) -> Response:
    """The body serialized once, as it stands: FastAPI would dump a returned model, validate
    the dump against the response model again and serialize that (the routes' bodies are
    built from validated results; the response model still documents them)."""
    return Response(body.model_dump_json(), media_type="application/json")


# The status nginx logs for a client that closed its connection first; nobody reads the body.
CLIENT_CLOSED = 499


def _client_closed() -> JSONResponse:
    return error_response(CLIENT_CLOSED, "client_closed", "the client closed the connection")


async def _classify(
    request: Request,
    texts: list[str],
    body: ClassifyRequest | SingleClassifyRequest,
    mode: str | None,
    text_field: str = "texts",
) -> tuple[JobResult, str, float]:
    """Runs the request through the runtime, cancelling it if the client leaves first
    (ClientDisconnectedError)."""
    runtime = _runtime(request)
    started = time.perf_counter()
    principal = principal_of(request)
    authorize_capabilities(
        principal, runtime.registry, body.capabilities, body.include_dependencies
    )
    priority: Priority = body.priority
    work = runtime.classify(
        texts,
        body.capabilities,
        body.include_dependencies,
        _mode(runtime, mode),
        text_field=text_field,
        tenant=principal.tenant,
        priority=priority,
        timeout_ms=body.timeout_ms,
    )
    job = await unless_disconnected(request, work)
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    return job, request_id, round((time.perf_counter() - started) * 1000, 2)


@router.post("/classify", response_model=ClassifyResponse)
async def classify(
    body: ClassifyRequest,
    request: Request,
    batching: str | None = Header(default=None, alias=MODE_HEADER),
) -> Response:
    """Per-text errors: a text that fails has `error` (and what did finish) in its place; the
    others keep their results (200, `failed_texts` > 0). The request fails as a whole (500
    capability_failed, 422 for texts too long) only when every text failed, and with 503
    engine_unavailable when an engine it needs is down."""
    try:
        job, request_id, latency = await _classify(request, body.texts, body, batching)
    except ClientDisconnectedError:
        return _client_closed()
    return _json(
        ClassifyResponse(
            request_id=request_id,
            latency_ms=latency,
            results=[text_body(job, i) for i in range(len(job.per_text))],
            window=window_body(job),
            cached=job.from_cache,
            partial=job.partial,
            failed_texts=job.failed_texts,
        )
    )


@router.post("/classify/single", response_model=SingleClassifyResponse)
async def classify_single(
    body: SingleClassifyRequest,
    request: Request,
    batching: str | None = Header(default=None, alias=MODE_HEADER),
) -> Response:
    """Its one text failing is the whole request failing."""
    try:
        job, request_id, latency = await _classify(request, [body.text], body, batching, "text")
    except ClientDisconnectedError:
        return _client_closed()
    results = {n: result_body(r) for n, r in job.per_text[0].items()}
    return _json(
        SingleClassifyResponse(
            request_id=request_id,
            latency_ms=latency,
            results=results,
            window=window_body(job),
            cached=job.from_cache,
            partial=job.partial,
            missing=list(job.missing_of(0)),
        )
    )


@router.get("/capabilities", response_model=CapabilitiesResponse)
async def capabilities(request: Request) -> CapabilitiesResponse:
    runtime = _runtime(request)
    specs = runtime.registry.specs()
    dtypes = runtime.model_dtypes()
    return CapabilitiesResponse(
        capabilities=[
            CapabilityBody(
                name=spec.name,
                kind=spec.kind,
                description=spec.definition.description,
                model=spec.model,
                dtype=None if spec.model is None else dtypes.get(spec.model),
                depends_on=list(spec.depends_on),
                labels=[LabelBody(name=lb.name, description=lb.description) for lb in spec.labels],
                version=spec.version,
            )
            for spec in specs
        ]
    )


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    return stats_body(_runtime(request))


def stats_body(runtime: Runtime) -> dict[str, Any]:
    """The body of /stats (also what the dashboard reads): counters, percentiles, the batching,
    admission, cache, drift and engine states. Numbers and names only, never a text."""
    snapshot = runtime.stats.snapshot()
    snapshot["batching"] = runtime.config.batching.model_dump()
    snapshot["batching"]["state"] = {m: vars(d.state()) for m, d in runtime.dispatchers.items()}
    snapshot["admission"] = vars(runtime.admission.state())
    snapshot["engines"] = {
        "constructions": runtime.pool.engine_constructions,
        "work": {name: vars(work) for name, work in runtime.pool.work().items()},
        "status": engine_status_section(
            runtime.pool.engine_states(),
            runtime.pool.replica_states(),
            runtime.pool.replica_work(),
        ),
    }
    return snapshot
