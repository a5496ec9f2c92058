"""GET /metrics: the runtime's Prometheus metrics in the text exposition format, and the
middleware that times every request. Both are left out with `observability.metrics: false`
(GET /metrics is then a 404)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from server.observability.http_metrics import RequestMetricsMiddleware
from server.observability.runtime_collector import RuntimeCollector, RuntimeProbes
from server.runtime import Runtime

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    # Reads the runtime's state: on the event loop, where that state changes (it is quick).
    body = generate_latest(runtime.metrics.registry)
    return Response(content=body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


def runtime_probes(runtime: Runtime) -> RuntimeProbes:
    return RuntimeProbes(
        queues=lambda: {mode: d.state() for mode, d in runtime.dispatchers.items()},
        admission=runtime.admission.state,
        engines=runtime.pool.engine_states,
        replicas=runtime.pool.replica_states,
        replica_work=runtime.pool.replica_work,
        cache=runtime.stats.cache_snapshot,
        drift=runtime.drift.readings,
    )


def install_metrics(app: FastAPI, runtime: Runtime) -> None:
    """Serves /metrics and times every request. Call it after every other middleware is added,
    so that this one is the outermost and also sees their answers (401, 413, 429...)."""
    if not runtime.config.observability.metrics:
        return
    runtime.metrics.registry.register(RuntimeCollector(runtime_probes(runtime)))
    app.add_middleware(RequestMetricsMiddleware, recorder=runtime.metrics)
    app.include_router(router)
