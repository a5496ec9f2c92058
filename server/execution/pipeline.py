"""One window, start to end: plan it, execute it, split the results back per request.

A request carries the capability set it was accepted under (see capability_set.py); a window
holds requests of one set and runs entirely on it, whatever set is current by then.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from capabilities.plan import BatchPlan, KnownResults, WorkItem
from capabilities.results import CapabilityResult
from server.batching.priority import Priority
from server.caching.lookup import Pair
from server.execution.answer import CapabilityFailedError as CapabilityFailedError
from server.execution.answer import JobResult, WindowInfo
from server.execution.capability_set import CapabilitySet
from server.execution.executor import WindowOutcome
from server.execution.observers import WindowObserver, WindowReport
from server.execution.progress import JobProgress, WindowView

_window_ids = itertools.count(1)


@dataclass(frozen=True)
class ClassifyJob:
    # The set current when the request arrived: it was validated against it and runs on it.
    capability_set: CapabilitySet
    texts: tuple[str, ...]
    capabilities: tuple[str, ...]
    include_dependencies: bool = False
    submitted_at: float = field(default_factory=time.monotonic)
    # Who asked (the API key's name or JWT subject; "anonymous" without auth): stats and logs.
    tenant: str = "anonymous"
    # Results the cache already gave on arrival, by (capability, text): not looked up again.
    known: KnownResults = field(default_factory=dict, compare=False)
    # high goes first into the next window; low last.
    priority: Priority = "normal"
    # Filled as the request's window runs; read when its deadline passes.
    progress: JobProgress = field(default_factory=JobProgress, compare=False)


@dataclass(frozen=True)
class Arrival:
    """What the result cache knew when a request arrived."""

    # The request, carrying the results found (its window does not look them up again).
    job: ClassifyJob
    # The whole answer, when every result the request asked for was cached.
    result: JobResult | None = None
    # (capability, unique text) executions the cached answer spared.
    executions_saved: int = 0


def window_set(jobs: Sequence[ClassifyJob]) -> CapabilitySet:
    """The one capability set a window's requests are bound to."""
    sets = {id(job.capability_set): job.capability_set for job in jobs}
    if len(sets) != 1:
        # The batcher never merges requests of two sets: this is a bug, not a bad request.
        raise RuntimeError(f"a window must hold requests of one capability set, not {len(sets)}")
    (capability_set,) = sets.values()
    return capability_set


class ClassificationPipeline:
    def __init__(self, observers: Sequence[WindowObserver] = (), dedup: bool = True) -> None:
        self.observers = list(observers)
        self.dedup = dedup

    @staticmethod
    def _returned(job: ClassifyJob) -> tuple[str, ...]:
        if job.include_dependencies:
            return tuple(job.capability_set.registry.resolve(job.capabilities))
        return job.capabilities

    async def on_arrival(self, job: ClassifyJob) -> Arrival:
        """Looks up every result the request must return; answers it when all are cached."""
        cache = job.capability_set.cache
        if cache is None:
            return Arrival(job)
        returned = self._returned(job)
        unique = dict.fromkeys(job.texts)
        found = await cache.find((name, text) for text in unique for name in returned)
        job.progress.cached = found
        if len(found) < len(unique) * len(returned):
            return Arrival(replace(job, known=found))
        per_text = [{name: found[(name, text)] for name in returned} for text in job.texts]
        closure = job.capability_set.registry.resolve(job.capabilities)
        return Arrival(job, JobResult(per_text, None, True), len(closure) * len(unique))

    async def _known_results(
        self, capability_set: CapabilitySet, jobs: Sequence[ClassifyJob]
    ) -> dict[Pair, CapabilityResult]:
        """Cached results for what the window must return; for each miss, its dependencies are
        looked up in turn, so a cached dependency is never recomputed."""
        known: dict[Pair, CapabilityResult] = {}
        cache, registry = capability_set.cache, capability_set.registry
        if cache is None:
            return known
        for job in jobs:
            known.update(job.known)
        seen = set(known)
        frontier = {
            (name, text)
            for job in jobs
            for name in self._returned(job)
            for text in job.texts
            if (name, text) not in seen
        }
        while frontier:
            seen |= frontier
            found = await cache.find(frontier)
            known.update(found)
            frontier = {
                (dep, text)
                for name, text in frontier
                if (name, text) not in found
                for dep in registry.get(name).depends_on
                if (dep, text) not in seen
            }
        return known

    @staticmethod
    async def _store_fresh(
        capability_set: CapabilitySet, plan: BatchPlan, outcome: WindowOutcome
    ) -> None:
        """Caches the results the window computed (never failures, error results, or skips an
        upstream error caused: those may go another way next time)."""
        cache = capability_set.cache
        if cache is None:
            return
        fresh = {
            (step.capability, plan.texts[tid]): results[tid]
            for step in plan.steps
            if cache.cacheable(step.capability)
            for results in [outcome.results.get(step.capability, {})]
            for tid in step.text_ids
            if tid in results and results[tid].cacheable
        }
        await cache.store(fresh)

    async def run_window(
        self,
        jobs: Sequence[ClassifyJob],
        mode: str,
        on_submitted: Callable[[], None] | None = None,
    ) -> list[JobResult | BaseException]:
        """Runs one window; `on_submitted` is called once its last engine step has started."""
        started = time.monotonic()
        capability_set = window_set(jobs)
        items = [WorkItem(j.texts, j.capabilities, j.include_dependencies) for j in jobs]
        known = await self._known_results(capability_set, jobs)
        plan = capability_set.plan(items, known, self.dedup)
        info = WindowInfo(
            id=next(_window_ids),
            mode=mode,
            requests=len(jobs),
            texts=plan.total_texts,
            unique_texts=len(plan.texts),
            capability_executions=plan.capability_executions,
            naive_equivalent_executions=plan.naive_equivalent_executions,
        )
        outcome = WindowOutcome()
        views = [
            WindowView(capability_set.registry, plan, outcome, i, info) for i in range(len(jobs))
        ]
        for job, view in zip(jobs, views, strict=True):
            job.progress.window = view
        demand = CallerDemand(plan, jobs)
        await capability_set.executor.run(plan, plan.known, outcome, demand, on_submitted)
        await self._store_fresh(capability_set, plan, outcome)
        report = WindowReport(
            plan,
            outcome,
            mode,
            [(started - job.submitted_at) * 1000 for job in jobs],
            tenants=[job.tenant for job in jobs],
            request_texts=[len(job.texts) for job in jobs],
        )
        for observer in self.observers:
            observer.window_finished(report)
        return [_whole(view.answer(partial=False)) for view in views]

    def partial_answer(self, job: ClassifyJob) -> JobResult | Exception | None:
        """What the request has so far (its deadline passed): from its window if it started,
        else from the cache; an exception when it failed as a whole; None when nothing is
        finished."""
        progress = job.progress
        if progress.window is not None:
            return progress.window.answer(partial=True)
        returned = self._returned(job)
        per_text = [
            {n: progress.cached[(n, text)] for n in returned if (n, text) in progress.cached}
            for text in job.texts
        ]
        if not any(per_text):
            return None
        missing = tuple(tuple(n for n in returned if n not in got) for got in per_text)
        return JobResult(per_text, None, from_cache=True, missing=missing, partial=True)


def _whole(answer: JobResult | Exception | None) -> JobResult | BaseException:
    if answer is None:  # only a partial answer can be empty
        raise RuntimeError("a finished window gave a request no answer")
    return answer


class CallerDemand:
    """Which texts still matter for a capability: those of the requests whose callers wait and
    whose closure holds it (the executor's `Demand`)."""

    def __init__(self, plan: BatchPlan, jobs: Sequence[ClassifyJob]) -> None:
        self._requests = list(zip(jobs, plan.requests, strict=True))

    def __call__(self, capability: str) -> set[int]:
        return {
            tid
            for job, planned in self._requests
            if not job.progress.left and capability in planned.closure
            for tid in planned.text_ids
        }

    def when_changed(self, callback: Callable[[], None]) -> None:
        for job, _ in self._requests:
            job.progress.when_left(callback)
