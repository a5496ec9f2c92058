"""The result cache without Redis: keys, L1, codec, and the pipeline with the fake processor."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient

from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from schemas.config import BatchingConfig, CacheConfig, CapServeConfig, ModelConfig
from server.api.app import create_app
from server.caching.codec import UnreadableValueError, decode_result, encode_result
from server.caching.factory import build_result_lookup
from server.caching.keys import CacheKeys
from server.caching.memory import MemoryStore
from server.runtime import Runtime
from server.settings import ConfigError
from tests.unit.fakes import FakePool, FakeProcessor, fake_result


def runtime_for(
    registry: CapabilityRegistry,
    pool: FakePool,
    mode: Literal["batched", "naive"] = "batched",
    **cache: Any,
) -> Runtime:
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(mode=mode, window_ms=20, dedup=cache.pop("dedup", True)),
        cache=CacheConfig(**cache),
    )
    return Runtime(config, registry, pool)


def texts_of(pool: FakePool, capability: str) -> list[str]:
    return sorted(text for call in pool.executions(capability) for text in call.texts)


# Keys


def test_the_key_depends_on_the_secret_and_never_holds_the_text(
    classic_registry: CapabilityRegistry,
):
    text = "my private message"
    one = CacheKeys(classic_registry, b"secret one")
    other = CacheKeys(classic_registry, b"secret two")
    key = one.key("sentiment", text)
    assert key == one.key("sentiment", text) and key.capability == "sentiment"
    assert key != other.key("sentiment", text)
    assert key != one.key("sentiment", text + " ")
    assert key != one.key("topic", text)
    assert text not in key.value and "private" not in key.value
    with pytest.raises(ValueError, match="secret"):
        CacheKeys(classic_registry, b"")


def test_the_key_covers_the_versions_of_the_dependency_closure(
    classic_registry: CapabilityRegistry,
):
    specs = {spec.name: spec for spec in classic_registry.specs()}
    # Only task_type's version differs; route depends on it through complexity.
    changed = dict(specs, task_type=dataclasses.replace(specs["task_type"], version="changed"))
    before = CacheKeys(classic_registry, b"s")
    after = CacheKeys(CapabilityRegistry(changed), b"s")
    for name in ("task_type", "complexity", "route"):
        assert before.key(name, "t") != after.key(name, "t"), name
    for name in ("sentiment", "topic"):  # not in task_type's dependents
        assert before.key(name, "t") == after.key(name, "t"), name


# L1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def result(name: str = "c", label: str = "a") -> CapabilityResult:
    return CapabilityResult(name, "v1", label, 0.9, {"a": 0.9, "b": 0.1})


def test_memory_evicts_the_least_recently_used():
    store = MemoryStore(max_entries=2, ttl_s=60)
    store.put("a", result(label="a"))
    store.put("b", result(label="b"))
    assert store.get("a") is not None  # "a" is now the most recently used
    store.put("c", result(label="a"))
    assert store.get("b") is None
    assert store.get("a") is not None and store.get("c") is not None
    assert len(store) == 2


def test_memory_entries_expire_after_the_ttl():
    clock = FakeClock()
    store = MemoryStore(max_entries=10, ttl_s=30, clock=clock)
    store.put("k", result())
    clock.now += 29.9
    assert store.get("k") == result()
    clock.now += 0.1
    assert store.get("k") is None
    assert len(store) == 0  # an expired entry is dropped when read


# Codec


def test_every_result_shape_round_trips(classic_registry: CapabilityRegistry):
    shapes = [
        CapabilityResult("s", "v", None, 1.0, {}, score=0.25),
        CapabilityResult("m", "v", None, 1.0, {"x": 0.2, "y": 0.1}, labels=()),
        CapabilityResult("m", "v", "y", 1.0, {"x": 0.6, "y": 0.7}, labels=("y", "x")),
        CapabilityResult(
            "r", "v", "a", 1 / 3, {"a": 1.0, "b": 0.0}, {"matched": "case 0", "inputs": {"t": "b"}}
        ),
    ]
    shapes += [fake_result(spec, "some text") for spec in classic_registry.specs()]
    for shape in shapes:
        assert decode_result(encode_result(shape)) == shape
    with pytest.raises(UnreadableValueError, match="unreadable"):
        decode_result(b'{"capability": "x"}')


# Configuration


def test_unknown_excluded_capability_is_a_config_error(classic_registry: CapabilityRegistry):
    with pytest.raises(ConfigError, match=r"cache\.exclude: unknown capability 'nope'"):
        build_result_lookup(CacheConfig(exclude=["nope"]), classic_registry)
    assert build_result_lookup(CacheConfig(enabled=False), classic_registry) is None


# Through the runtime


async def test_a_repeated_request_is_answered_on_arrival(classic_registry: CapabilityRegistry):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool)
    first = await runtime.classify(["a", "b"], ["sentiment", "topic"])
    calls = len(pool.processor.calls)
    second = await runtime.classify(["b", "a", "b"], ["topic", "sentiment"])
    assert len(pool.processor.calls) == calls  # no processor call
    assert second.from_cache and second.window is None  # never went to a window
    assert not first.from_cache and first.window is not None
    assert second.per_text[1] == first.per_text[0] and second.per_text[0] == first.per_text[1]
    assert list(second.per_text[0]) == ["topic", "sentiment"]
    stats = runtime.stats.snapshot()
    assert stats["windows"] == 1
    cache = stats["cache"]
    assert cache["answered_on_arrival"] == 1
    assert cache["executions_saved"] == 4  # 2 capabilities x 2 unique texts
    assert cache["l1"]["hits"] == 4
    assert cache["capabilities"]["topic"]["hits"] == 2
    assert cache["l2"]["state"] == "off"


async def test_partial_hits_compute_only_the_misses(classic_registry: CapabilityRegistry):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool)
    first = await runtime.classify(["a", "b"], ["sentiment"])
    second = await runtime.classify(["c", "a", "b"], ["sentiment"])
    assert texts_of(pool, "sentiment") == ["a", "b", "c"]
    assert not second.from_cache and second.window is not None
    assert second.per_text[1:] == first.per_text
    assert runtime.stats.snapshot()["cache"]["executions_saved"] == 2


async def test_a_cached_dependency_is_not_recomputed(classic_registry: CapabilityRegistry):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool)
    first = await runtime.classify(["write code"], ["task_type"])
    second = await runtime.classify(["write code"], ["complexity"], include_dependencies=True)
    assert texts_of(pool, "task_type") == ["write code"]  # once, in the first request
    (complexity,) = pool.executions("complexity")
    assert complexity.deps == ({"task_type": first.per_text[0]["task_type"].label},)
    assert second.per_text[0]["task_type"] == first.per_text[0]["task_type"]
    # route is a rule over both, now cached: nothing reaches the processor.
    calls = len(pool.processor.calls)
    third = await runtime.classify(["write code"], ["route"])
    assert len(pool.processor.calls) == calls and not third.from_cache
    assert third.per_text[0]["route"].details["inputs"]["task_type"] == (
        first.per_text[0]["task_type"].label
    )


async def test_concurrent_requests_reuse_what_an_earlier_window_cached(
    classic_registry: CapabilityRegistry,
):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool)
    await runtime.classify(["x"], ["topic"])
    both = await asyncio.gather(
        runtime.classify(["x", "y"], ["topic"]), runtime.classify(["x"], ["topic", "sentiment"])
    )
    assert texts_of(pool, "topic") == ["x", "y"]
    assert texts_of(pool, "sentiment") == ["x"]
    assert both[0].per_text[0]["topic"] == both[1].per_text[0]["topic"]


async def test_failures_are_not_cached(classic_registry: CapabilityRegistry):
    pool = FakePool(FakeProcessor(fail_texts={"bad"}))
    runtime = runtime_for(classic_registry, pool)
    for _ in range(2):
        with pytest.raises(Exception, match="failed on texts"):
            await runtime.classify(["bad"], ["sentiment"])
    assert texts_of(pool, "sentiment") == ["bad", "bad"]


async def test_a_failed_dependency_another_request_needed_does_not_fail_a_hit(
    classic_registry: CapabilityRegistry,
):
    pool = FakePool(FakeProcessor(fail_on={"task_type"}))
    runtime = runtime_for(classic_registry, pool)
    # Cache a complexity result for "t" by hand: its dependency cannot be computed now.
    assert runtime.cache is not None
    cached = fake_result(classic_registry.get("complexity"), "t")
    await runtime.cache.store({("complexity", "t"): cached})
    hit, failing = await asyncio.gather(
        runtime.classify(["t"], ["complexity", "sentiment"]),  # sentiment: to the window
        runtime.classify(["t"], ["task_type"]),  # the same window; task_type fails
        return_exceptions=True,
    )
    assert isinstance(failing, Exception) and "task_type" in str(failing)
    assert not isinstance(hit, BaseException) and hit.window is not None
    assert hit.per_text[0]["complexity"] == cached
    assert runtime.stats.snapshot()["windows"] == 1 and len(pool.executions("task_type")) == 1


async def test_excluded_capabilities_are_always_computed(classic_registry: CapabilityRegistry):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool, exclude=["sentiment"])
    await runtime.classify(["a"], ["sentiment", "topic"])
    again = await runtime.classify(["a"], ["sentiment", "topic"])
    assert texts_of(pool, "sentiment") == ["a", "a"]
    assert texts_of(pool, "topic") == ["a"]
    assert not again.from_cache
    assert "sentiment" not in runtime.stats.snapshot()["cache"]["capabilities"]


async def test_naive_mode_uses_the_cache_too(classic_registry: CapabilityRegistry):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool, mode="naive")
    await runtime.classify(["a"], ["topic"])
    await runtime.classify(["a", "b"], ["topic"])
    assert texts_of(pool, "topic") == ["a", "b"]


async def test_a_disabled_cache_computes_every_time(classic_registry: CapabilityRegistry):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool, enabled=False)
    await runtime.classify(["a"], ["topic"])
    again = await runtime.classify(["a"], ["topic"])
    assert texts_of(pool, "topic") == ["a", "a"] and not again.from_cache
    assert runtime.stats.snapshot()["cache"] == {"enabled": False}


async def test_without_dedup_each_occurrence_is_computed(classic_registry: CapabilityRegistry):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool, dedup=False, enabled=False)
    first, second = await asyncio.gather(
        runtime.classify(["x", "x"], ["sentiment"]), runtime.classify(["x"], ["sentiment"])
    )
    assert texts_of(pool, "sentiment") == ["x", "x", "x"]
    assert first.window is not None and first.window.unique_texts == 3
    assert first.per_text[0] == first.per_text[1] == second.per_text[0]


def test_the_api_marks_an_answer_from_the_cache(classic_registry: CapabilityRegistry):
    pool = FakePool()
    with TestClient(create_app(runtime_for(classic_registry, pool))) as client:
        body = {"texts": ["a"], "capabilities": ["topic"]}
        first = client.post("/classify", json=body).json()
        calls = len(pool.processor.calls)  # the warm-up's and the first request's
        second = client.post("/classify", json=body).json()
        single = client.post("/classify/single", json={"text": "a", "capabilities": ["topic"]})
        stats = client.get("/stats").json()
    assert first["cached"] is False and first["window"]["requests"] == 1
    assert second["cached"] is True and second["window"] is None
    assert second["results"] == first["results"]
    assert single.json()["cached"] is True and single.json()["window"] is None
    assert len(pool.processor.calls) == calls
    assert stats["cache"]["answered_on_arrival"] == 2 and stats["cache"]["enabled"] is True
