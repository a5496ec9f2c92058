"""The Ray Serve application of a capserve config: the replica deployment (a whole runtime
each, routed to by text affinity) and the ingress in front of it; and the checks this mode
needs before anything starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.config import AutoscalingConfig, RequestRouterConfig

from deploy.ingress import CapserveIngress
from deploy.replica import CapserveReplica
from schemas.config import CapServeConfig

REPLICA_DEPLOYMENT = "capserve-replica"
INGRESS_DEPLOYMENT = "capserve-ingress"
# By import path, as Ray Serve imports it in every process that routes.
ROUTER_CLASS = "deploy.affinity_router.TextAffinityRouter"
# How often Ray Serve asks a replica for its health, and how long one answer may take.
HEALTH_CHECK_PERIOD_S = 5.0
HEALTH_CHECK_TIMEOUT_S = 30.0


class RayModeError(ValueError):
    """The config cannot run as a Ray Serve application; the message says which key."""


def check_ray_config(config: CapServeConfig, environ: Mapping[str, str] | None = None) -> None:
    """Replicas share results through the Redis L2, keyed with one secret: with the result
    cache on, both are required (a random secret per replica would make every L2 entry of one
    replica a miss on the others, and a default secret would let anyone who reads Redis
    confirm a guessed text)."""
    env = os.environ if environ is None else environ
    cache = config.cache
    if not cache.enabled:
        return
    problems = []
    if not cache.redis_url:
        problems.append("cache.redis_url is null: replicas need a shared Redis L2")
    if not env.get(cache.secret_env):
        problems.append(
            f"${cache.secret_env} is unset or empty: replicas need one shared cache secret"
        )
    if problems:
        raise RayModeError(
            "serve --ray with the result cache on: "
            + "; ".join(problems)
            + " (or set cache.enabled: false)"
        )


def replica_options(config: CapServeConfig) -> dict[str, Any]:
    """The replica deployment's Ray Serve options, from `ray.*`."""
    ray = config.ray
    options: dict[str, Any] = {
        "name": REPLICA_DEPLOYMENT,
        "ray_actor_options": {"num_cpus": ray.replica_cpus, "num_gpus": ray.replica_gpus},
        "max_ongoing_requests": ray.max_ongoing_requests,
        "max_queued_requests": ray.max_queued_requests,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
        # A replica told to stop drains its windows first (as `capserve serve` on SIGTERM).
        "graceful_shutdown_timeout_s": config.server.shutdown_grace_s + 10.0,
        "request_router_config": RequestRouterConfig(
            request_router_class=ROUTER_CLASS,  # type: ignore[arg-type]  # str or class
            request_router_kwargs={"imbalance_threshold": ray.imbalance_threshold},
        ),
    }
    if ray.autoscaling is not None:
        scaling = ray.autoscaling
        if scaling.max_replicas < scaling.min_replicas:
            raise RayModeError("ray.autoscaling.max_replicas is below min_replicas")
        options["autoscaling_config"] = AutoscalingConfig(
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            target_ongoing_requests=scaling.target_ongoing_requests,
        )
    else:
        options["num_replicas"] = ray.num_replicas
    return options


def build_application(config: CapServeConfig, config_path: Path | None) -> Any:
    """The bound application: `serve.run` it. Each replica gets the resolved config (env
    overrides applied here, once) and the path a reload re-reads."""
    replica = serve.deployment(**replica_options(config))(CapserveReplica)
    ingress = serve.deployment(name=INGRESS_DEPLOYMENT, ray_actor_options={"num_cpus": 0})(
        CapserveIngress
    )
    config_data = config.model_dump(mode="json")
    return ingress.bind(
        replica.bind(config_data, str(config_path) if config_path else None),
        retries=config.ray.retries,
        retry_after_s=config.admission.retry_after_s,
        max_body_bytes=config.limits.max_body_bytes,
    )
