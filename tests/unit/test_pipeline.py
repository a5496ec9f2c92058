"""Window execution with the fake processor: dedup, splitting, dependencies, naive vs batched."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest

from capabilities.registry import CapabilityRegistry
from schemas.config import BatchingConfig, CapServeConfig, LimitsConfig, ModelConfig
from server.batching.batcher import BatcherClosedError
from server.execution.pipeline import CapabilityFailedError
from server.runtime import RequestTimeoutError, Runtime
from tests.unit.fakes import FakePool, FakeProcessor


def runtime_for(
    registry: CapabilityRegistry, pool: FakePool, mode: Literal["batched", "naive"] = "batched"
) -> Runtime:
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(mode=mode, window_ms=50),
    )
    return Runtime(config, registry, pool)


async def test_seed_001_batched_vs_naive_execution_counts(seed_registry: CapabilityRegistry):
    requests = [
        (["text A"], ["classification"]),
        (["text B"], ["classification", "recommendations"]),
        (["text C"], ["classification", "alerts"]),
    ]
    counts = {}
    for mode in ("batched", "naive"):
        pool = FakePool()
        runtime = runtime_for(seed_registry, pool, mode)
        await asyncio.gather(*(runtime.classify(t, c) for t, c in requests))
        stats = runtime.stats.snapshot()
        counts[mode] = (stats["capability_executions"], stats["naive_equivalent_executions"])
        # Only the classification runs on a (fake) engine; the rules are pure functions.
        engine_calls = len(pool.executions("classification"))
        assert engine_calls == (1 if mode == "batched" else 3)
    assert counts["batched"] == (3, 5)
    assert counts["naive"] == (5, 5)


async def test_each_capability_runs_once_over_unique_texts(classic_registry: CapabilityRegistry):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool)
    results = await asyncio.gather(
        runtime.classify(["x", "y"], ["topic"]),
        runtime.classify(["y", "z", "y"], ["topic", "sentiment"]),
        runtime.classify(["x"], ["sentiment"]),
    )
    topic_calls = pool.executions("topic")
    assert len(topic_calls) == 1 and sorted(topic_calls[0].texts) == ["x", "y", "z"]
    sentiment_calls = pool.executions("sentiment")
    assert len(sentiment_calls) == 1 and sorted(sentiment_calls[0].texts) == ["x", "y", "z"]
    window = results[0].window
    assert window is not None
    assert {r.window.id for r in results if r.window} == {window.id}
    assert window.requests == 3
    assert window.unique_texts == 3 and window.texts == 6


async def test_results_are_split_back_per_request_in_input_order(
    classic_registry: CapabilityRegistry,
):
    runtime = runtime_for(classic_registry, FakePool())
    first, second = await asyncio.gather(
        runtime.classify(["b", "a"], ["topic"]),
        runtime.classify(["a", "c", "a"], ["sentiment", "topic"]),
    )
    assert [set(t) for t in first.per_text] == [{"topic"}, {"topic"}]
    assert [list(t) for t in second.per_text] == [["sentiment", "topic"]] * 3
    # The same text gets the same result in both requests: it was computed once.
    assert first.per_text[1]["topic"] == second.per_text[0]["topic"]
    assert second.per_text[0] == second.per_text[2]


async def test_dependency_results_reach_dependents_and_are_shown_on_request(
    classic_registry: CapabilityRegistry,
):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool)
    hidden = await runtime.classify(["write code"], ["route"])
    assert list(hidden.per_text[0]) == ["route"]
    shown = await runtime.classify(["write code"], ["route"], include_dependencies=True)
    per = shown.per_text[0]
    assert list(per) == ["task_type", "complexity", "route"]
    (complexity_call,) = pool.executions("complexity")[-1:]
    assert complexity_call.deps == ({"task_type": per["task_type"].label},)
    assert per["route"].details["inputs"] == {
        "task_type": per["task_type"].label,
        "complexity": per["complexity"].label,
    }


async def test_independent_capabilities_run_concurrently(classic_registry: CapabilityRegistry):
    pool = FakePool(FakeProcessor(delay=0.05))
    runtime = runtime_for(classic_registry, pool)
    await runtime.classify(["t"], ["topic", "sentiment", "task_type"])
    assert pool.processor.max_running == 3


async def test_a_failure_fails_its_dependents_only(classic_registry: CapabilityRegistry):
    pool = FakePool(FakeProcessor(fail_on={"task_type"}))
    runtime = runtime_for(classic_registry, pool)
    failing, fine = await asyncio.gather(
        runtime.classify(["t"], ["route"]),
        runtime.classify(["t"], ["sentiment"]),
        return_exceptions=True,
    )
    assert isinstance(failing, CapabilityFailedError)
    assert failing.capability == "task_type"
    assert "RuntimeError" in str(failing) and "SECRET" not in str(failing)
    assert not isinstance(fine, BaseException)
    assert fine.per_text[0]["sentiment"].label
    assert pool.executions("complexity") == []  # never ran: its dependency failed
    stats = runtime.stats.snapshot()
    assert stats["failed_requests"] == 1 and stats["capabilities"]["task_type"]["errors"] == 1


async def test_unknown_capability_is_refused_before_queueing(classic_registry: CapabilityRegistry):
    pool = FakePool()
    runtime = runtime_for(classic_registry, pool)
    with pytest.raises(ValueError, match="valid capabilities: complexity"):
        await runtime.classify(["t"], ["nope"])
    assert pool.processor.calls == []


async def test_stats_count_windows_latency_and_per_capability_work(
    classic_registry: CapabilityRegistry,
):
    runtime = runtime_for(classic_registry, FakePool())
    await asyncio.gather(*(runtime.classify([f"t{i}", "shared"], ["sentiment"]) for i in range(5)))
    stats = runtime.stats.snapshot()
    assert stats["requests"] == 5 and stats["windows"] == 1
    assert stats["texts"] == 10 and stats["unique_texts"] == 6
    assert stats["capability_executions"] == 1 and stats["naive_equivalent_executions"] == 5
    assert stats["naive_to_actual_ratio"] == 5.0
    assert stats["capabilities"]["sentiment"]["avg_texts_per_execution"] == 6.0
    assert stats["latency_ms"]["p50"] is not None and stats["queue_wait_ms"]["p99"] is not None


async def test_a_failing_text_gets_its_own_error_and_the_others_keep_their_results(
    classic_registry: CapabilityRegistry,
):
    pool = FakePool(FakeProcessor(fail_texts={"bad"}))
    runtime = runtime_for(classic_registry, pool)
    mixed, fine, failing = await asyncio.gather(
        runtime.classify(["ok one", "bad"], ["route"]),
        runtime.classify(["ok one", "ok two"], ["route"]),
        runtime.classify(["bad"], ["route"]),
        return_exceptions=True,
    )
    assert not isinstance(mixed, BaseException)
    assert mixed.failed_texts == 1 and not mixed.partial
    assert set(mixed.per_text[0]) == {"route"} and mixed.error_of(0) is None
    assert mixed.per_text[1] == {} and mixed.missing_of(1) == ("route",)
    error = mixed.error_of(1)
    assert error is not None
    assert (error.type, error.capability, error.reason) == (
        "capability_failed",
        "task_type",
        "RuntimeError",
    )
    assert error.message == "capability 'task_type' failed: RuntimeError"
    assert not isinstance(fine, BaseException)
    assert [set(t) for t in fine.per_text] == [{"route"}, {"route"}] and fine.failed_texts == 0
    # Every text failed: the request fails as a whole.
    assert isinstance(failing, CapabilityFailedError)
    assert str(failing) == "capability 'task_type' failed on texts[0]: RuntimeError"
    # The dependent never ran on the failed text, and ran once on the others.
    (complexity,) = pool.executions("complexity")
    assert sorted(complexity.texts) == ["ok one", "ok two"]


async def test_a_slow_request_times_out_with_a_clear_error(classic_registry: CapabilityRegistry):
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(window_ms=10),
        limits=LimitsConfig(request_timeout_s=0.2),
    )
    pool = FakePool(FakeProcessor(delay=5.0))
    runtime = Runtime(config, classic_registry, pool)
    with pytest.raises(RequestTimeoutError, match=r"did not finish within 0\.2 s"):
        await runtime.classify(["t"], ["sentiment"])
    assert [c.capability for c in pool.processor.calls] == ["sentiment"]  # it was running
    assert runtime.stats.snapshot()["failed_requests"] == 1
    # Shutdown does not wait forever for the stuck window: it cancels it after the grace.
    await asyncio.wait_for(runtime.stop(), 2.0)
    assert pool.processor.running == 0


async def test_closing_naive_mode_waits_for_running_requests(classic_registry: CapabilityRegistry):
    pool = FakePool(FakeProcessor(delay=0.05))
    runtime = runtime_for(classic_registry, pool, mode="naive")
    running = asyncio.create_task(runtime.classify(["t"], ["sentiment"]))
    await asyncio.sleep(0.01)
    assert pool.processor.running == 1
    await runtime.dispatcher().close()
    assert pool.processor.running == 0  # close() returned only after the work finished
    assert (await running).per_text[0]["sentiment"].label
    with pytest.raises(BatcherClosedError):  # a text the result cache cannot answer
        await runtime.classify(["t2"], ["sentiment"])


async def test_a_window_says_it_submitted_once_no_model_step_waits(
    classic_registry: CapabilityRegistry,
):
    """route (a rule) <- complexity (LLM) <- task_type (LLM): the window has sent its engine
    work once complexity has started; route, which needs no engine, is left."""
    from capabilities.plan import WorkItem

    pool = FakePool(FakeProcessor(delay=0.01))
    runtime = runtime_for(classic_registry, pool)
    capability_set = runtime.capability_set
    plan = capability_set.plan([WorkItem(("a text",), ("route",), False)], {}, True)
    seen: list[list[str]] = []
    outcome = await capability_set.executor.run(
        plan, None, None, None, lambda: seen.append([c.capability for c in pool.processor.calls])
    )
    # Called once, after task_type ran and complexity was started (not yet run: its task is
    # only scheduled), before the window ended.
    assert seen == [["task_type"]]
    assert [c.capability for c in pool.processor.calls] == ["task_type", "complexity"]
    assert set(outcome.results) >= {"task_type", "complexity", "route"}
