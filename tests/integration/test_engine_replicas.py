"""Replicas of one model's engine on a real server: MiniLM as 2 replicas, one core each
(`replicas: 2`, cores split evenly), and SmolLM2 as one engine.

The texts of a load spread over both replicas; one replica's engine core takes a `kill -9` under
load: the server stays ready (the model is up while a replica is), every request is answered 200
(calls the dead replica held are retried on the other; none gets a 500, a 503 or hangs), and the
supervisor restarts that replica alone on its own core. An impossible placement is refused at
start with a clear message, before any engine starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import pytest

from tests.integration.live_server import REPO, LiveServer, disposable_server, write_config
from tests.integration.test_engine_failure import Load, _engine_cores, _status, _wait_for

pytestmark = pytest.mark.slow

MINILM_ONLY = ("sentiment",)


def _pinned_cores(core: psutil.Process) -> set[int]:
    """The cores that threads of an engine core or its workers are pinned to, one each (vLLM
    pins each OpenMP thread to one core of its VLLM_CPU_OMP_THREADS_BIND set; the
    environment itself cannot be read back, vLLM's process titles overwrite it)."""
    pinned: set[int] = set()
    try:
        processes = [core, *core.children(recursive=True)]
    except psutil.Error:
        return pinned
    for process in processes:
        for task in Path(f"/proc/{process.pid}/task").glob("*"):
            try:
                status = (task / "status").read_text()
            except OSError:
                continue
            allowed = next(
                line.split(":", 1)[1].strip()
                for line in status.splitlines()
                if line.startswith("Cpus_allowed_list")
            )
            if allowed.isdigit():
                pinned.add(int(allowed))
    return pinned


def _minilm(url: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"{url}/stats", timeout=10).json()["engines"]["status"][
        "minilm"
    ]
    return status


@pytest.fixture(scope="module")
def replica_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("replica-server")
    overrides = {
        "models": {"minilm": {"replicas": 2}},
        "supervisor": {"health_interval_s": 0.5, "restart_backoff_s": 1},
        "cache": {"enabled": False},  # every request reaches the engines
    }
    with disposable_server(folder, overrides) as live:
        yield live


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="2 replicas need 2 cores")
def test_a_killed_replica_is_restarted_alone_and_every_request_is_answered(
    replica_server: LiveServer,
) -> None:
    url = replica_server.url
    cores = _engine_cores(replica_server)
    assert len(cores) == 3, [p.name() for p in replica_server.descendants()]
    # Started in config order: smollm2 (every core), then minilm's replicas 0 and 1.
    pinned = [_pinned_cores(p) for p in cores]
    assert pinned[1:] == [{0}, {1}], pinned
    status = _minilm(url)
    assert status["replicas_up"] == 2 and [r["replica"] for r in status["replicas"]] == ["0", "1"]

    load = Load(url, [MINILM_ONLY], per_stream=3)
    try:
        _wait_for(lambda: load.ok_since(0, MINILM_ONLY) >= 6, 300, "requests before the kill")
        work = [r["work"]["requests"] for r in _minilm(url)["replicas"]]
        assert all(n > 0 for n in work), f"texts not spread over the replicas: {work}"

        cores[2].send_signal(signal.SIGKILL)  # replica 1's engine core
        killed_at = time.monotonic()
        _wait_for(
            lambda: _minilm(url)["replicas"][1]["state"] in {"restarting", "failed"},
            10,
            "replica 1 taken out",
        )
        assert _status(url, "/health/ready") == 200  # degraded capacity, still serving
        assert _minilm(url)["replicas_up"] == 1
        _wait_for(lambda: load.ok_since(killed_at, MINILM_ONLY) >= 6, 120, "service on replica 0")
        _wait_for(
            lambda: _minilm(url)["replicas"][1]["state"] == "ready",
            600,
            "replica 1 restarted",
        )
        recovered_at = time.monotonic()
        _wait_for(lambda: load.ok_since(recovered_at, MINILM_ONLY) >= 3, 120, "service after")
    finally:
        outcomes = load.stop()

    statuses = sorted({o.status for o in outcomes})
    assert statuses == [200], [(o.status, o.error_type) for o in outcomes if o.status != 200]
    status = _minilm(url)
    replicas = status["replicas"]
    assert [r["restarts"] for r in replicas] == [0, 1]
    assert replicas[1]["last_error"] == "EngineDeadError"
    assert status["replicas_up"] == 2
    restarted = _engine_cores(replica_server)
    assert len(restarted) == 3 and _pinned_cores(restarted[-1]) == {1}  # back on its own core
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'capserve_engine_replica_up{engine="minilm",replica="1"} 1.0' in metrics
    assert 'capserve_engine_replica_restarts_total{engine="minilm",replica="1"} 1.0' in metrics


def test_an_impossible_placement_is_refused_before_any_engine_starts(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    overrides = {"models": {"minilm": {"replicas": cores + 1}}}
    config = write_config(tmp_path, overrides, test_capabilities=False)
    capserve = Path(sys.executable).parent / "capserve"
    started = time.monotonic()
    result = subprocess.run(
        [str(capserve), "serve", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "model 'minilm'" in result.stderr and "replicas" in result.stderr, result.stderr
    assert time.monotonic() - started < 60  # refused up front, no engine started
