"""HTTP endpoints. They validate, call the runtime, and shape responses; no engine code here."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Header, Request

from capabilities.results import CapabilityResult
from schemas.api import (
    CapabilitiesResponse,
    CapabilityBody,
    CapabilityResultBody,
    ClassifyRequest,
    ClassifyResponse,
    LabelBody,
    SingleClassifyRequest,
    SingleClassifyResponse,
    TextResultBody,
    WindowBody,
)
from server.execution.pipeline import JobResult
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


def _result_body(result: CapabilityResult) -> CapabilityResultBody:
    return CapabilityResultBody(
        label=result.label,
        confidence=round(result.confidence, 6),
        probabilities={k: round(v, 6) for k, v in result.probabilities.items()},
        version=result.version,
        score=None if result.score is None else round(result.score, 6),
        labels=None if result.labels is None else list(result.labels),
        fields=None if result.fields is None else dict(result.fields),
        path=None if result.path is None else list(result.path),
        skipped=result.skipped is not None,
        reason=result.skipped,
        error=result.error,
        details=dict(result.details),
    )


def _window_body(job: JobResult) -> WindowBody | None:
    return None if job.window is None else WindowBody(**vars(job.window))


async def _classify(
    request: Request,
    texts: list[str],
    capabilities: list[str],
    include: bool,
    mode: str | None,
    text_field: str = "texts",
) -> tuple[JobResult, str, float]:
    runtime = _runtime(request)
    started = time.perf_counter()
    job = await runtime.classify(
        texts, capabilities, include, _mode(runtime, mode), text_field=text_field
    )
    return job, uuid.uuid4().hex, round((time.perf_counter() - started) * 1000, 2)


@router.post("/classify", response_model=ClassifyResponse)
async def classify(
    body: ClassifyRequest,
    request: Request,
    batching: str | None = Header(default=None, alias=MODE_HEADER),
) -> ClassifyResponse:
    job, request_id, latency = await _classify(
        request, body.texts, body.capabilities, body.include_dependencies, batching
    )
    results = [
        TextResultBody(index=i, results={n: _result_body(r) for n, r in per.items()})
        for i, per in enumerate(job.per_text)
    ]
    return ClassifyResponse(
        request_id=request_id,
        latency_ms=latency,
        results=results,
        window=_window_body(job),
        cached=job.from_cache,
    )


@router.post("/classify/single", response_model=SingleClassifyResponse)
async def classify_single(
    body: SingleClassifyRequest,
    request: Request,
    batching: str | None = Header(default=None, alias=MODE_HEADER),
) -> SingleClassifyResponse:
    job, request_id, latency = await _classify(
        request, [body.text], body.capabilities, body.include_dependencies, batching, "text"
    )
    results = {n: _result_body(r) for n, r in job.per_text[0].items()}
    return SingleClassifyResponse(
        request_id=request_id,
        latency_ms=latency,
        results=results,
        window=_window_body(job),
        cached=job.from_cache,
    )


@router.get("/capabilities", response_model=CapabilitiesResponse)
async def capabilities(request: Request) -> CapabilitiesResponse:
    specs = _runtime(request).registry.specs()
    return CapabilitiesResponse(
        capabilities=[
            CapabilityBody(
                name=spec.name,
                kind=spec.kind,
                description=spec.definition.description,
                model=spec.model,
                depends_on=list(spec.depends_on),
                labels=[LabelBody(name=lb.name, description=lb.description) for lb in spec.labels],
                version=spec.version,
            )
            for spec in specs
        ]
    )


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    snapshot = runtime.stats.snapshot()
    snapshot["batching"] = runtime.config.batching.model_dump()
    snapshot["batching"]["state"] = {m: vars(d.state()) for m, d in runtime.dispatchers.items()}
    snapshot["engines"] = {
        "constructions": runtime.pool.engine_constructions,
        "work": {name: vars(work) for name, work in runtime.pool.work().items()},
    }
    return snapshot
