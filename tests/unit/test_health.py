"""Health endpoints, the background start-up and the bounded drain, on the API with a fake pool
(the real engines: tests/integration/test_engine_failure.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from capabilities.registry import CapabilityRegistry
from processors.engine_status import EngineState, EngineStatus
from schemas.config import BatchingConfig, CapServeConfig, ModelConfig, ServerConfig
from server.api.app import create_app
from server.batching.batcher import BatcherClosedError
from server.runtime import Runtime
from tests.unit.fakes import FakePool, FakeProcessor

CLASSIFY = {"texts": ["a"], "capabilities": ["sentiment"]}


class EnginesPool(FakePool):
    """A fake pool with the classic set's two engines, whose states a test sets, and a start
    that waits for `gate` (a thread event: the app runs in the TestClient's thread)."""

    def __init__(self, processor: FakeProcessor | None = None, fail_start: bool = False) -> None:
        super().__init__(processor)
        self.states: dict[str, EngineState] = {"smollm2": "starting", "minilm": "starting"}
        self.gate = threading.Event()
        self.fail_start = fail_start

    async def start(self) -> None:
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        if self.fail_start:
            raise FileNotFoundError("model 'minilm' is not prepared")
        await super().start()
        self.states = {name: "ready" for name in self.states}

    def engine_states(self) -> dict[str, EngineStatus]:
        return {name: EngineStatus(name, state) for name, state in self.states.items()}


def _config(**server: Any) -> CapServeConfig:
    return CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(window_ms=10),
        server=ServerConfig(**server),
    )


def _wait(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def background(classic_registry: CapabilityRegistry) -> Iterator[tuple[TestClient, EnginesPool]]:
    pool = EnginesPool()
    app = create_app(Runtime(_config(), classic_registry, pool), start_in_background=True)
    with TestClient(app) as client:
        yield client, pool
        pool.gate.set()


def test_the_app_answers_during_start_up_and_serves_once_ready(
    background: tuple[TestClient, EnginesPool],
) -> None:
    client, pool = background
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "starting"
    assert ready.json()["engines"]["smollm2"]["state"] == "starting"
    refused = client.post("/classify", json=CLASSIFY)
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "starting"
    assert refused.headers["Retry-After"] == "30"
    assert client.get("/capabilities").status_code == 200  # reads need no engine

    pool.gate.set()
    _wait(lambda: client.get("/health").status_code == 200)
    assert client.get("/health/ready").json()["status"] == "ok"
    assert client.post("/classify", json=CLASSIFY).status_code == 200


def test_readiness_follows_the_engines(background: tuple[TestClient, EnginesPool]) -> None:
    client, pool = background
    pool.gate.set()
    _wait(lambda: client.get("/health/ready").status_code == 200)
    pool.states["minilm"] = "restarting"
    body = client.get("/health/ready").json()
    assert body["status"] == "unavailable" and body["engines"]["minilm"]["state"] == "restarting"
    assert client.get("/health").status_code == 503  # the alias
    assert client.get("/health/live").status_code == 200


def test_a_failed_background_start_is_reported(classic_registry: CapabilityRegistry) -> None:
    failures: list[BaseException] = []
    pool = EnginesPool(fail_start=True)
    runtime = Runtime(_config(), classic_registry, pool)
    app = create_app(runtime, start_in_background=True, on_start_failed=failures.append)
    with TestClient(app) as client:
        pool.gate.set()
        _wait(lambda: bool(failures))
        assert isinstance(failures[0], FileNotFoundError)
        assert client.get("/health/ready").status_code == 503
    assert pool.stopped == 1  # the lifespan's end stops what started


def test_deep_check_runs_one_capability_per_engine(classic_registry: CapabilityRegistry) -> None:
    pool = EnginesPool()
    pool.gate.set()
    with TestClient(create_app(Runtime(_config(), classic_registry, pool))) as client:
        pool.processor.calls.clear()  # the warm-up's
        response = client.get("/health/deep")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert body["engines"]["minilm"]["capability"] == "task_type"  # no dependencies
        assert body["engines"]["smollm2"]["ok"] is True
        assert body["cache"] == {"enabled": True, "l2": "off", "ok": True}
        probed = {call.capability for call in pool.processor.calls}
        assert probed == {body["engines"]["smollm2"]["capability"], "task_type"}
        assert client.get("/stats").json()["requests"] == 0  # probes are not traffic

        pool.processor.fail_on.add("task_type")
        failed = client.get("/health/deep")
        assert failed.status_code == 503 and failed.json()["status"] == "failed"
        assert "RuntimeError" in failed.json()["engines"]["minilm"]["error"]
        assert "SECRET" not in failed.text  # exception types only, never engine messages

        pool.states["smollm2"] = "restarting"
        down = client.get("/health/deep").json()["engines"]["smollm2"]
        assert down == {
            "capability": down["capability"],
            "ok": False,
            "error": "engine restarting",
            "latency_ms": None,
        }


async def test_shutdown_is_bounded_by_the_grace(classic_registry: CapabilityRegistry) -> None:
    pool = FakePool(FakeProcessor(delay=30.0))
    runtime = Runtime(_config(shutdown_grace_s=0.3, warmup=False), classic_registry, pool)
    await runtime.start()
    stuck = asyncio.create_task(runtime.classify(["t"], ["sentiment"]))
    await asyncio.sleep(0.1)
    assert pool.processor.running == 1
    started = time.monotonic()
    await asyncio.wait_for(runtime.stop(), 5.0)
    assert time.monotonic() - started < 3.0  # the grace, not the 30 s of work
    with pytest.raises(BatcherClosedError):
        await stuck
    assert pool.stopped == 1 and runtime.phase == "stopping"


async def test_in_flight_work_finishes_within_the_grace(
    classic_registry: CapabilityRegistry,
) -> None:
    pool = FakePool(FakeProcessor(delay=0.2))
    runtime = Runtime(_config(shutdown_grace_s=10, warmup=False), classic_registry, pool)
    await runtime.start()
    running = asyncio.create_task(runtime.classify(["t"], ["sentiment"]))
    await asyncio.sleep(0.05)
    await runtime.drain()
    assert (await running).per_text[0]["sentiment"].label  # finished, not cut
    with pytest.raises(BatcherClosedError):  # nothing new is taken
        await runtime.classify(["u"], ["sentiment"])
    await runtime.stop()
