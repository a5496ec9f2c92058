"""One capserve replica on Ray Serve: a whole `server.runtime.Runtime` (batcher, pool, result
cache) and the same FastAPI app as `capserve serve`, answering the requests the ingress
forwards. The app runs in process through httpx's ASGI transport, so authentication, limits,
errors and /health/* are those of the single server, unchanged."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx

from deploy.forwarding import ForwardedRequest, ForwardedResponse
from deploy.replica_cores import replica_cores
from processors.placement import CPU_BIND_ENV, available_cpu_cores, format_core_set
from schemas.config import CapServeConfig
from server.api.app import create_app
from server.blas_threads import limit_blas_threads
from server.observability.logging import configure_logging
from server.runtime import Runtime

log = logging.getLogger(__name__)

# Headers the transport sets itself.
_HOP_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


class CapserveReplica:
    """The Ray Serve deployment class (`deploy.application` applies its options). Its
    constructor returns once the engines are up and warm, so Ray Serve routes to it only then."""

    async def __init__(  # type: ignore[misc]  # Ray Serve awaits an async constructor
        self, config_data: dict[str, Any], config_path: str | None
    ) -> None:
        config = CapServeConfig.model_validate(config_data)
        configure_logging(config.server.log_format, config.server.log_level)
        limit_blas_threads(config.server.blas_threads)
        self._replica_id = _replica_id()
        if config.ray.pin_replica_cores and config.ray.replica_gpus == 0:
            cores = replica_cores(_local_rank(), config.ray.replica_cpus, available_cpu_cores())
            bind = format_core_set(cores)
            config.engine_env.cpu_omp_threads_bind = bind
            os.environ[CPU_BIND_ENV] = bind  # over anything inherited from the driver
            log.info("replica %s: engines bound to cores %s", self._replica_id, bind)
        path = Path(config_path) if config_path else None
        self.runtime = Runtime.build(config, config_path=path)
        self._app = create_app(self.runtime)
        await self.runtime.start()
        log.info("replica %s: serving", self._replica_id)
        transport = httpx.ASGITransport(app=self._app)
        timeout = config.limits.max_request_timeout_s + 30.0
        self._client = httpx.AsyncClient(
            transport=transport, base_url="http://capserve-replica", timeout=timeout
        )

    async def handle(
        self, request: ForwardedRequest, affinity: str | None = None
    ) -> ForwardedResponse:
        """One HTTP exchange through the replica's app. `affinity` is for the router only."""
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_HEADERS]
        response = await self._client.request(
            request.method,
            request.path,
            params=request.query.decode("latin-1") or None,
            headers=headers,
            content=request.body,
        )
        return ForwardedResponse(
            status=response.status_code,
            headers=tuple(
                (k, v) for k, v in response.headers.items() if k.lower() != "content-length"
            ),
            body=response.content,
            replica=self._replica_id,
        )

    async def check_health(self) -> None:
        """Ray Serve replaces the replica when this raises: when the runtime is no longer
        serving or an engine is beyond its supervisor's restarts. An engine restarting is not
        a reason (its supervisor brings it back; the router's retries cover the meantime)."""
        if self.runtime.phase != "serving":
            raise RuntimeError(f"runtime {self.runtime.phase}")
        failed = [n for n, s in self.runtime.pool.engine_states().items() if s.state == "failed"]
        if failed:
            raise RuntimeError(f"engines failed for good: {', '.join(sorted(failed))}")

    async def __del__(self) -> None:
        """Ray Serve's graceful shutdown: drain, then stop the engines."""
        await self._client.aclose()
        await self.runtime.stop()


def _replica_context() -> Any:
    from ray import serve

    return serve.get_replica_context()


def _replica_id() -> str:
    try:
        return str(_replica_context().replica_id.unique_id)
    except Exception:  # outside a Ray Serve replica (unit tests)
        return f"pid-{os.getpid()}"


def _local_rank() -> int:
    try:
        return int(_replica_context().rank.local_rank)
    except Exception:
        return 0
