"""Deadlines, partial answers and cancellation, with the fake processor: what a request gets
when its timeout_ms passes, and what the window stops computing once its callers left."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from capabilities.registry import CapabilityRegistry
from capabilities.spec import CapabilitySpec
from processors.base import ItemOutcome, ProcessorInput, WindowContext
from processors.engine_status import EngineUnavailableError
from schemas.config import BatchingConfig, CapServeConfig, LimitsConfig, ModelConfig
from server.batching.admission import AdmissionController, AdmissionRejectedError
from server.runtime import RequestTimeoutError, Runtime
from server.validation import RequestRejectedError
from tests.unit.fakes import FakePool, FakeProcessor

GUARD_S = 5.0  # stops a broken test from hanging; nothing here measures speed


@dataclass
class SlowOn(FakeProcessor):
    """A fake processor that takes `slow[capability]` seconds for that capability."""

    slow: Mapping[str, float] = field(default_factory=dict)
    # Raised instead of answering, for these capabilities.
    raise_on: Mapping[str, BaseException] = field(default_factory=dict)

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        self.running += 1
        try:
            await asyncio.sleep(self.slow.get(spec.name, 0.0))
        finally:
            self.running -= 1
        if spec.name in self.raise_on:
            raise self.raise_on[spec.name]
        return await super().run(spec, inputs, context)


def runtime_for(registry: CapabilityRegistry, processor: FakeProcessor) -> tuple[Runtime, FakePool]:
    pool = FakePool(processor)
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(window_ms=20),
        limits=LimitsConfig(request_timeout_s=5.0, max_request_timeout_s=10.0),
    )
    return Runtime(config, registry, pool), pool


async def test_at_the_deadline_the_finished_results_come_back_partial(
    classic_registry: CapabilityRegistry,
):
    runtime, pool = runtime_for(classic_registry, SlowOn(slow={"topic": 3.0}))
    result = await asyncio.wait_for(
        runtime.classify(["a", "b"], ["sentiment", "topic"], timeout_ms=300), GUARD_S
    )
    assert result.partial and result.failed_texts == 0
    assert [set(per) for per in result.per_text] == [{"sentiment"}, {"sentiment"}]
    assert result.missing == (("topic",), ("topic",))
    assert result.window is not None
    # The caller left: the slow step is cancelled, not left running.
    await asyncio.sleep(0.1)
    assert pool.processor.running == 0
    assert runtime.stats.snapshot()["requests"] == 1


async def test_at_the_deadline_with_nothing_finished_it_is_a_timeout(
    classic_registry: CapabilityRegistry,
):
    runtime, pool = runtime_for(classic_registry, SlowOn(slow={"topic": 3.0}))
    with pytest.raises(RequestTimeoutError, match="none of its results was ready"):
        await asyncio.wait_for(runtime.classify(["a"], ["topic"], timeout_ms=200), GUARD_S)
    await asyncio.sleep(0.1)
    assert pool.processor.running == 0  # the window's every caller left: it was cancelled
    assert runtime.stats.snapshot()["failed_requests"] == 1


async def test_a_deadline_above_the_maximum_is_refused(classic_registry: CapabilityRegistry):
    runtime, pool = runtime_for(classic_registry, SlowOn())
    with pytest.raises(RequestRejectedError, match="timeout_ms: must be between 1 and 10000"):
        await runtime.classify(["a"], ["topic"], timeout_ms=10_001)
    assert pool.processor.calls == []


async def test_texts_whose_caller_left_are_dropped_before_the_next_step(
    classic_registry: CapabilityRegistry,
):
    # route -> complexity -> task_type: task_type is slow; one caller gives up during it.
    runtime, pool = runtime_for(classic_registry, SlowOn(slow={"task_type": 0.5}))
    leaving = runtime.classify(["gone"], ["route"], timeout_ms=200)
    staying = runtime.classify(["kept"], ["route"])
    left, stayed = await asyncio.wait_for(
        asyncio.gather(leaving, staying, return_exceptions=True), GUARD_S
    )
    assert isinstance(left, RequestTimeoutError)
    assert not isinstance(stayed, BaseException) and set(stayed.per_text[0]) == {"route"}
    (task_type,) = pool.executions("task_type")
    assert sorted(task_type.texts) == ["gone", "kept"]  # one window, started for both
    (complexity,) = pool.executions("complexity")
    assert complexity.texts == ("kept",)  # nobody waited for "gone" any more


async def test_an_engine_down_fails_the_whole_request_with_engine_unavailable(
    classic_registry: CapabilityRegistry,
):
    down = SlowOn(raise_on={"topic": EngineUnavailableError("minilm")})
    runtime, _ = runtime_for(classic_registry, down)
    with pytest.raises(EngineUnavailableError, match="engine 'minilm' is not available"):
        await runtime.classify(["a", "b"], ["sentiment", "topic"])


async def test_high_priority_is_admitted_where_low_is_refused(
    classic_registry: CapabilityRegistry,
):
    runtime, _ = runtime_for(classic_registry, SlowOn(slow={"topic": 0.3}))
    runtime.admission = AdmissionController(4, 1, {"low": 0.5})
    first = asyncio.create_task(runtime.classify(["a", "b"], ["topic"], priority="high"))
    await asyncio.sleep(0.01)
    with pytest.raises(AdmissionRejectedError):
        await runtime.classify(["c"], ["topic"], priority="low")
    second = await runtime.classify(["c", "d"], ["topic"], priority="high")
    assert len(second.per_text) == 2 and len((await first).per_text) == 2
