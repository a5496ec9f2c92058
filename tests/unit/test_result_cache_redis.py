"""The result cache's L2 on a real redis-server (the tests' own, with a password), behind the
runtime with the fake processor: sharing across runtimes, a wrong password, Redis going down
and coming back during a load."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capabilities.registry import CapabilityRegistry
from schemas.config import BatchingConfig, CacheConfig, CapServeConfig, ModelConfig
from server.runtime import Runtime
from tests.redis_server import RedisServer, running_redis
from tests.unit.fakes import FakePool, FakeProcessor

SECRET = "a test secret shared by the replicas"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
def cache_env(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    monkeypatch.setenv("CAPSERVE_CACHE_SECRET", SECRET)
    monkeypatch.setenv("CAPSERVE_REDIS_PASSWORD", redis_server.password)


@pytest.fixture
def cache_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="server.caching")
    return caplog


def replica(
    registry: CapabilityRegistry, redis_server: RedisServer, pool: FakePool, **cache: Any
) -> Runtime:
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(window_ms=10),
        cache=CacheConfig(redis_url=redis_server.url, **cache),
    )
    return Runtime(config, registry, pool)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.usefixtures("cache_env")
async def test_a_second_replica_is_served_from_redis(
    classic_registry: CapabilityRegistry, redis_server: RedisServer
):
    pool_a, pool_b = FakePool(), FakePool()
    a = replica(classic_registry, redis_server, pool_a)
    b = replica(classic_registry, redis_server, pool_b)
    try:
        computed = await a.classify(["shared text", "other"], ["route"], include_dependencies=True)
        answered = await b.classify(["other", "shared text"], ["route"])
        assert pool_b.processor.calls == []  # b's L1 was cold: everything came from Redis
        assert answered.from_cache and answered.window is None
        assert answered.per_text[0]["route"] == computed.per_text[1]["route"]
        cache = b.stats.snapshot()["cache"]
        assert cache["l1"] == {"hits": 0, "misses": 2, "entries": 2}
        assert cache["l2"]["hits"] == 2 and cache["l2"]["state"] == "up"
        # L2 hits were copied into b's L1.
        again = await b.classify(["other"], ["route"])
        assert again.from_cache and b.stats.snapshot()["cache"]["l1"]["hits"] == 1
        # Redis holds keyed hashes and results, never the text.
        with redis_server.client() as direct:
            stored = [direct.get(key) or b"" for key in direct.keys("*")]
            assert stored and all(b"shared text" not in v for v in stored)
            assert all(b"shared text" not in key for key in direct.keys("*"))
    finally:
        await a.stop()
        await b.stop()


async def test_replicas_with_different_secrets_share_nothing(
    classic_registry: CapabilityRegistry,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    cache_logs: pytest.LogCaptureFixture,
):
    monkeypatch.setenv("CAPSERVE_REDIS_PASSWORD", redis_server.password)
    monkeypatch.delenv("CAPSERVE_CACHE_SECRET", raising=False)
    pool_b = FakePool()
    a = replica(classic_registry, redis_server, FakePool())
    b = replica(classic_registry, redis_server, pool_b)
    try:
        await a.classify(["t"], ["topic"])
        await b.classify(["t"], ["topic"])
        assert [c.capability for c in pool_b.processor.calls] == ["topic"]
    finally:
        await a.stop()
        await b.stop()
    assert sum("random per-process secret" in m for m in warnings_of(cache_logs)) == 2


@pytest.mark.usefixtures("cache_env")
async def test_an_unreadable_stored_value_is_a_miss(
    classic_registry: CapabilityRegistry, redis_server: RedisServer
):
    pool = FakePool()
    runtime = replica(classic_registry, redis_server, pool)
    assert runtime.cache is not None
    key = runtime.cache.keys.key("topic", "t").value
    with redis_server.client() as direct:
        direct.set(key, b"not json")
    try:
        result = await runtime.classify(["t"], ["topic"])
    finally:
        await runtime.stop()
    assert result.per_text[0]["topic"].label and len(pool.executions("topic")) == 1
    # Read on arrival, and again when the window starts (a result may have arrived meanwhile).
    assert runtime.stats.snapshot()["cache"]["l2"]["unreadable"] == 2


async def test_a_wrong_password_degrades_to_l1_with_one_warning(
    classic_registry: CapabilityRegistry,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    cache_logs: pytest.LogCaptureFixture,
):
    monkeypatch.setenv("CAPSERVE_CACHE_SECRET", SECRET)
    monkeypatch.setenv("CAPSERVE_REDIS_PASSWORD", "wrong-password-123")
    pool = FakePool()
    runtime = replica(classic_registry, redis_server, pool, redis_retry_after_s=0.01)
    try:
        first = await runtime.classify(["a", "b"], ["sentiment"])
        await asyncio.sleep(0.02)  # past the back-off: the next lookups try Redis again
        second = await runtime.classify(["a", "b"], ["sentiment"])
        await asyncio.sleep(0.02)
        third = await runtime.classify(["c"], ["sentiment"])
    finally:
        await runtime.stop()
    assert second.from_cache and second.per_text == first.per_text  # from L1
    assert third.per_text[0]["sentiment"].label
    warnings = warnings_of(cache_logs)
    assert len(warnings) == 1, warnings
    assert "AuthenticationError" in warnings[0] and redis_server.url in warnings[0]
    assert "wrong-password" not in cache_logs.text and SECRET not in cache_logs.text
    l2 = runtime.stats.snapshot()["cache"]["l2"]
    assert l2["state"] == "down" and l2["errors"] >= 2 and l2["last_error"] == "AuthenticationError"


async def test_a_password_in_the_url_is_used_and_never_shown(
    classic_registry: CapabilityRegistry,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    cache_logs: pytest.LogCaptureFixture,
):
    monkeypatch.delenv("CAPSERVE_REDIS_PASSWORD", raising=False)
    monkeypatch.setenv("CAPSERVE_CACHE_SECRET", SECRET)
    url = f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/0"
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        cache=CacheConfig(redis_url=url),
    )
    runtime = Runtime(config, classic_registry, FakePool())
    try:
        await runtime.classify(["t"], ["topic"])
    finally:
        await runtime.stop()
    snapshot = runtime.stats.snapshot()["cache"]["l2"]
    assert snapshot["state"] == "up" and snapshot["errors"] == 0
    assert snapshot["url"] == redis_server.url
    assert redis_server.password not in cache_logs.text and redis_server.password not in str(
        snapshot
    )


@pytest.mark.usefixtures("cache_env")
async def test_redis_going_down_during_a_load_and_coming_back(
    classic_registry: CapabilityRegistry,
    redis_server: RedisServer,
    cache_logs: pytest.LogCaptureFixture,
):
    pool = FakePool(FakeProcessor(delay=0.005))
    runtime = replica(classic_registry, redis_server, pool, redis_retry_after_s=0.2)
    rounds_done = 0
    stop_load = asyncio.Event()
    failures: list[BaseException] = []

    async def load() -> None:
        nonlocal rounds_done
        while not stop_load.is_set():
            texts = [f"fresh {rounds_done}", "repeated one", "repeated two"]
            outcomes = await asyncio.gather(
                runtime.classify(texts, ["sentiment", "topic"]),
                runtime.classify(texts[1:], ["route"]),
                runtime.classify([f"other {rounds_done}"], ["escalation"]),
                return_exceptions=True,
            )
            failures.extend(o for o in outcomes if isinstance(o, BaseException))
            rounds_done += 1

    async def rounds(count: int) -> None:
        target = rounds_done + count
        while rounds_done < target:
            await asyncio.sleep(0.005)

    loader = asyncio.create_task(load())
    try:
        await rounds(5)
        assert runtime.stats.snapshot()["cache"]["l2"]["state"] == "up"
        await asyncio.to_thread(redis_server.stop)  # Redis dies while requests run
        await rounds(20)
        assert runtime.stats.snapshot()["cache"]["l2"]["state"] == "down"
        await asyncio.to_thread(redis_server.start)  # on the same port, empty
        for _ in range(200):  # the back-off passes, and the cache reconnects by itself
            if runtime.stats.snapshot()["cache"]["l2"]["state"] == "up":
                break
            await rounds(1)
        await rounds(3)
    finally:
        stop_load.set()
        await loader
    assert failures == []  # every request succeeded, from L1 and the (fake) engines
    l2 = runtime.stats.snapshot()["cache"]["l2"]
    assert l2["state"] == "up" and l2["errors"] >= 1
    warnings = warnings_of(cache_logs)
    assert len(warnings) == 1 and "unavailable" in warnings[0], warnings
    assert sum("is back" in r.getMessage() for r in cache_logs.records) == 1
    # L2 hits resume: a replica with a cold L1 finds what was computed after the restart.
    last = rounds_done - 1
    other = replica(classic_registry, redis_server, FakePool())
    try:
        answered = await other.classify([f"fresh {last}"], ["sentiment", "topic"])
    finally:
        await other.stop()
        await runtime.stop()
    assert answered.from_cache
    assert other.stats.snapshot()["cache"]["l2"]["hits"] == 2
