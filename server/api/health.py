"""Health endpoints: liveness, readiness (with every engine's state), and a deep check.

- `/health/live`: 200 while the process answers (also during start-up and restarts).
- `/health/ready` (and its alias `/health`): 200 only when every engine is up and the warm-up is
  done; 503 during start-up, engine restarts and shutdown.
- `/health/deep`: a tiny real classification through each engine and the result cache's state;
  503 when any check fails.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from schemas.api import (
    CacheProbeBody,
    DeepHealthResponse,
    EngineProbeBody,
    EngineStateBody,
    LivenessResponse,
    ReadinessResponse,
)
from server.runtime import Runtime

router = APIRouter()


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/health/live", response_model=LivenessResponse)
async def live() -> LivenessResponse:
    return LivenessResponse()


@router.get("/health/ready", response_model=ReadinessResponse)
@router.get("/health", response_model=ReadinessResponse)
async def ready(request: Request) -> JSONResponse:
    runtime = _runtime(request)
    states = runtime.pool.engine_states()
    engines = {
        name: EngineStateBody(state=s.state, restarts=s.restarts, last_error=s.last_error)
        for name, s in states.items()
    }
    ok = runtime.ready
    if ok:
        status = "ok"
    elif runtime.phase == "serving":
        status = "unavailable"
    else:
        status = runtime.phase
    body = ReadinessResponse(status=status, engines=engines)
    return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())


@router.get("/health/deep", response_model=DeepHealthResponse)
async def deep(request: Request) -> JSONResponse:
    runtime = _runtime(request)
    check = await runtime.deep_check()
    ok = check.ok and runtime.ready
    body = DeepHealthResponse(
        status="ok" if ok else "failed",
        engines={
            name: EngineProbeBody(
                capability=p.capability, ok=p.ok, error=p.error, latency_ms=p.latency_ms
            )
            for name, p in check.engines.items()
        },
        cache=CacheProbeBody(enabled=check.cache.enabled, l2=check.cache.l2, ok=check.cache.ok),
    )
    return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())
