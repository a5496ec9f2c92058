"""`capserve serve --ray`: starts (or joins) a Ray cluster, runs the application, and serves
until SIGINT or SIGTERM, then shuts Ray Serve down (each replica drains its windows and stops
its engines) and leaves the cluster."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from deploy.application import build_application, check_ray_config
from schemas.config import CapServeConfig

log = logging.getLogger(__name__)

APP_NAME = "capserve"


class _Stop(Exception):
    """SIGINT or SIGTERM: raised in the main thread, also while the application starts."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def serve_on_ray(config: CapServeConfig, config_path: Path | None) -> int:
    """Returns the exit code: 0 after a signal and a clean shutdown (a signal during the
    start-up too: the replicas started so far are stopped, their engines with them)."""
    import ray
    from ray import serve

    check_ray_config(config)  # before any cluster or engine starts
    # Every replica's lines, not Ray's one-of-many summary of lines alike across workers.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    settings = config.ray
    host = settings.host or config.server.host
    port = settings.port or config.server.port
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if settings.address:
            ray.init(address=settings.address, log_to_driver=True)
        else:
            cpus = settings.local_cpus or os.cpu_count() or 1
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)
        serve.start(http_options={"host": host, "port": port})
        log.info("ray: starting %s on http://%s:%d", APP_NAME, host, port)
        application = build_application(config, config_path)
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
        log.info("ray: %s is running", APP_NAME)
        while True:
            time.sleep(1.0)
    except _Stop as stop:
        log.info("ray: %s, stopping", stop)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one shutdown, not interrupted
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if ray.is_initialized():
                serve.shutdown()  # type: ignore[no-untyped-call]
        finally:
            ray.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
