"""Texts abandoned inside a running step: when every request holding a text has left, the text's
engine work is cancelled while the step runs, the text gets nothing (no result, no failure,
nothing cached, no error counted), and the step's other texts finish as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from capabilities.plan import WorkItem, build_plan
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import (
    ItemAbandoned,
    ItemFailure,
    ItemOutcome,
    ProcessorInput,
    TextAbandonedError,
    WindowContext,
)
from processors.classifier import ClassifierProcessor
from processors.embedding_similarity import EmbeddingSimilarityProcessor
from processors.overflow import refuse
from schemas.capability import CapabilityDefinition
from schemas.config import BatchingConfig, CapServeConfig, LimitsConfig, ModelConfig
from server.execution.executor import PlanExecutor
from server.execution.progress import JobProgress
from server.runtime import RequestTimeoutError, Runtime
from tests.integration.log_canary import canary_text
from tests.unit.fakes import Call, FakePool, FakeProcessor, fake_result

GUARD_S = 10.0  # stops a broken test from hanging; nothing here measures speed
SLOW_S = 30.0  # an abandoned text's work: the tests finish long before it would


@dataclass
class PerTextWork(FakeProcessor):
    """A fake processor that runs each text's work as the real ones do, through
    `unless_abandoned`: `slow` texts take SLOW_S, the others `delay`. It records which texts
    finished and which were cancelled."""

    slow: set[str] = field(default_factory=set)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        self.calls.append(Call(spec.name, tuple(i.text for i in inputs), tuple({} for _ in inputs)))

        async def one(text: str) -> CapabilityResult:
            try:
                await asyncio.sleep(SLOW_S if text in self.slow else self.delay)
            except asyncio.CancelledError:
                self.cancelled.append(text)
                raise
            self.finished.append(text)
            return fake_result(spec, text)

        outcomes = await asyncio.gather(
            *(context.unless_abandoned(i.text, partial(one, i.text)) for i in inputs),
            return_exceptions=True,
        )
        return [
            ItemFailure.from_exception(o) if isinstance(o, BaseException) else o for o in outcomes
        ]


def runtime_for(registry: CapabilityRegistry, processor: FakeProcessor) -> tuple[Runtime, FakePool]:
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(window_ms=50),
        limits=LimitsConfig(request_timeout_s=SLOW_S, max_request_timeout_s=SLOW_S),
    )
    pool = FakePool(processor)
    return Runtime(config, registry, pool), pool


# --- the window context ----------------------------------------------------------------------


async def test_abandoning_a_text_cancels_its_work_and_no_other():
    context = WindowContext()
    gone, kept = canary_text("abandon-gone"), canary_text("abandon-kept")
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await asyncio.sleep(SLOW_S)
        return "never"

    async def quick() -> str:
        await started.wait()
        await asyncio.sleep(0.05)
        return "done"

    abandoned = asyncio.create_task(context.unless_abandoned(gone, slow))
    finishing = asyncio.create_task(context.unless_abandoned(kept, quick))
    await started.wait()
    context.abandon([gone])
    with pytest.raises(TextAbandonedError):
        await asyncio.wait_for(abandoned, GUARD_S)
    assert await asyncio.wait_for(finishing, GUARD_S) == "done"
    assert context.abandoned(gone) and not context.abandoned(kept)


async def test_work_for_an_abandoned_text_never_starts():
    context = WindowContext()
    context.abandon(["gone"])
    started: list[str] = []

    async def work() -> None:
        started.append("gone")

    with pytest.raises(TextAbandonedError):
        await context.unless_abandoned("gone", work)
    assert started == []


async def test_cancelling_the_caller_is_a_cancellation_not_an_abandonment():
    context = WindowContext()
    cancelled: list[bool] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(SLOW_S)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = asyncio.create_task(context.unless_abandoned("text", slow))
    await asyncio.sleep(0.05)
    context.abandon(["text"])  # both at once: the caller's own cancellation wins
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, GUARD_S)
    assert cancelled == [True]


def test_an_abandoned_text_is_not_failed_as_too_long():
    outcomes: list[ItemOutcome] = [ItemAbandoned(), ItemFailure("RuntimeError")]
    assert refuse(outcomes, {0, 1}) == [ItemAbandoned(), ItemFailure("TextTooLongForModelError")]
    assert ItemFailure.from_exception(TextAbandonedError()) == ItemAbandoned()


def test_the_progress_tells_the_window_once_when_its_caller_leaves():
    progress = JobProgress()
    heard: list[str] = []
    progress.when_left(lambda: heard.append("first"))
    assert not progress.left
    progress.left = True
    progress.left = True
    progress.when_left(lambda: heard.append("late"))  # already gone: told at once
    assert progress.left and heard == ["first", "late"]


# --- the executor ----------------------------------------------------------------------------


class ManualDemand:
    """A Demand whose texts the test drops by hand."""

    def __init__(self, held: set[int]) -> None:
        self.held = held
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, capability: str) -> set[int]:
        return set(self.held)

    def when_changed(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def drop(self, tid: int) -> None:
        self.held.discard(tid)
        for callback in self.callbacks:
            callback()


async def test_the_executor_drops_an_abandoned_text_inside_its_running_step(
    classic_registry: CapabilityRegistry,
):
    gone, kept = canary_text("executor-gone"), canary_text("executor-kept")
    processor = PerTextWork(delay=0.3, slow={gone})
    plan = build_plan(classic_registry, [WorkItem((gone, kept), ("sentiment",))])
    demand = ManualDemand(set(range(len(plan.texts))))
    executor = PlanExecutor(classic_registry, FakePool(processor))
    running = asyncio.create_task(executor.run(plan, demand=demand))
    await asyncio.sleep(0.1)  # the step is running, both texts at the engine
    demand.drop(plan.texts.index(gone))
    outcome = await asyncio.wait_for(running, GUARD_S)
    gone_id, kept_id = plan.texts.index(gone), plan.texts.index(kept)
    assert processor.cancelled == [gone] and processor.finished == [kept]
    assert set(outcome.results["sentiment"]) == {kept_id}
    assert outcome.failures["sentiment"] == {}
    assert outcome.dropped == {"sentiment": {gone_id}}


# --- the whole server (fake engine) ----------------------------------------------------------


async def test_a_caller_leaving_a_running_step_cancels_its_texts_and_the_other_finishes(
    classic_registry: CapabilityRegistry,
):
    leaving_texts = [canary_text("leaving-1"), canary_text("leaving-2")]
    staying_text = canary_text("staying")
    processor = PerTextWork(delay=0.5, slow=set(leaving_texts))
    runtime, pool = runtime_for(classic_registry, processor)
    leaving = runtime.classify(leaving_texts, ["sentiment"], timeout_ms=200)
    staying = runtime.classify([staying_text], ["sentiment"])
    left, stayed = await asyncio.wait_for(
        asyncio.gather(leaving, staying, return_exceptions=True), GUARD_S
    )
    assert isinstance(left, RequestTimeoutError)  # nothing of it finished
    assert not isinstance(stayed, BaseException)
    assert not stayed.partial and stayed.failed_texts == 0
    assert stayed.per_text[0]["sentiment"] == fake_result(
        classic_registry.get("sentiment"), staying_text
    )
    (call,) = pool.executions("sentiment")
    assert sorted(call.texts) == sorted([*leaving_texts, staying_text])  # one step for all
    assert sorted(processor.cancelled) == sorted(leaving_texts)
    assert processor.finished == [staying_text]
    stats = runtime.stats.snapshot()
    assert stats["requests"] == 2
    assert stats["capabilities"]["sentiment"]["errors"] == 0  # abandoned is not an error
    # Only the finished text was cached; the abandoned ones are computed when asked again.
    cache = runtime.capability_set.cache
    assert cache is not None
    cached = await cache.find(("sentiment", text) for text in [*leaving_texts, staying_text])
    assert set(cached) == {("sentiment", staying_text)}


async def test_a_text_another_caller_still_holds_is_not_abandoned(
    classic_registry: CapabilityRegistry,
):
    shared, own = canary_text("shared"), canary_text("own")
    processor = PerTextWork(delay=0.5, slow={own})
    runtime, _ = runtime_for(classic_registry, processor)
    leaving = runtime.classify([own, shared], ["sentiment"], timeout_ms=200)
    staying = runtime.classify([shared], ["sentiment"])
    left, stayed = await asyncio.wait_for(
        asyncio.gather(leaving, staying, return_exceptions=True), GUARD_S
    )
    assert not isinstance(stayed, BaseException) and not stayed.partial
    assert processor.cancelled == [own] and processor.finished == [shared]
    # The one that left got what was done at its deadline: nothing yet.
    assert isinstance(left, RequestTimeoutError)


# --- the engine processors honour it ---------------------------------------------------------


class BlockingEngine:
    """Embeds or classifies instantly, except `slow` texts, which wait until cancelled."""

    name = "fake"
    max_model_len = 512

    def __init__(self, slow: set[str]) -> None:
        self.slow = slow
        self.texts: list[str] = []
        self.cancelled: list[str] = []
        self.answered: list[str] = []

    async def tokenize(
        self, texts: Sequence[str], truncate_to: int | None = None
    ) -> list[list[int]]:
        self.texts.extend(texts)
        return [[self.texts.index(text)] for text in texts]

    async def _answer(self, ids: Sequence[int], value: list[float]) -> list[float]:
        text = self.texts[ids[0]]
        if text in self.slow:
            try:
                await asyncio.sleep(SLOW_S)
            except asyncio.CancelledError:
                self.cancelled.append(text)
                raise
        self.answered.append(text)
        return value

    async def embed(self, prompt_token_ids: Sequence[int]) -> list[float]:
        return await self._answer(prompt_token_ids, [1.0, 0.0])

    async def classify(self, prompt_token_ids: Sequence[int]) -> list[float]:
        return await self._answer(prompt_token_ids, [2.0, 0.0])


def spec_of(tmp_path: Path, kind: str, labels: Sequence[str | Mapping[str, str]]) -> CapabilitySpec:
    definition = CapabilityDefinition.model_validate(
        {"name": "cap", "kind": kind, "model": "m", "labels": list(labels)}
    )
    return CapabilitySpec.from_definition(definition, tmp_path / "cap.yaml")


async def abandon_soon(context: WindowContext, text: str) -> None:
    await asyncio.sleep(0.1)
    context.abandon([text])


async def test_the_shared_embedding_of_an_abandoned_text_is_cancelled_and_the_others_kept(
    tmp_path: Path,
):
    gone, kept = canary_text("embedding-gone"), canary_text("embedding-kept")
    engine = BlockingEngine(slow={gone})
    processor = EmbeddingSimilarityProcessor(engine)  # type: ignore[arg-type]
    labels = [{"name": "a", "description": "x"}, {"name": "b", "description": "y"}]
    spec = spec_of(tmp_path, "embedding_similarity", labels)
    await processor.prototypes(spec)  # the labels' own embeddings: not a window's work
    context = WindowContext()
    inputs = [ProcessorInput(gone, {}), ProcessorInput(kept, {})]
    outcomes, _ = await asyncio.wait_for(
        asyncio.gather(processor.run(spec, inputs, context), abandon_soon(context, gone)), GUARD_S
    )
    assert outcomes[0] == ItemAbandoned()
    assert isinstance(outcomes[1], CapabilityResult)
    assert engine.cancelled == [gone] and kept in engine.answered
    # Another capability of the window reads the same memo: the kept text's vector, once.
    vectors = await processor.text_vectors([ProcessorInput(kept, {})], context)
    assert isinstance(vectors[0], np.ndarray) and engine.answered.count(kept) == 1


async def test_the_classifier_cancels_an_abandoned_text(tmp_path: Path):
    gone, kept = canary_text("classifier-gone"), canary_text("classifier-kept")
    engine = BlockingEngine(slow={gone})
    processor = ClassifierProcessor(engine)  # type: ignore[arg-type]
    spec = spec_of(tmp_path, "classifier", ["yes", "no"])
    context = WindowContext()
    inputs = [ProcessorInput(gone, {}), ProcessorInput(kept, {})]
    outcomes, _ = await asyncio.wait_for(
        asyncio.gather(processor.run(spec, inputs, context), abandon_soon(context, gone)), GUARD_S
    )
    assert outcomes[0] == ItemAbandoned()
    assert isinstance(outcomes[1], CapabilityResult) and outcomes[1].label == "yes"
    assert engine.cancelled == [gone] and engine.answered == [kept]
