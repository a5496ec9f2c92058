"""One window, start to end: plan it, execute it, split the results back per request."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from capabilities.plan import BatchPlan, WorkItem, build_plan
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from server.execution.executor import PlanExecutor, WindowOutcome
from server.execution.observers import WindowObserver, WindowReport

_window_ids = itertools.count(1)


@dataclass(frozen=True)
class ClassifyJob:
    texts: tuple[str, ...]
    capabilities: tuple[str, ...]
    include_dependencies: bool = False
    submitted_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class WindowInfo:
    id: int
    mode: str
    requests: int
    texts: int
    unique_texts: int
    capability_executions: int
    naive_equivalent_executions: int


@dataclass(frozen=True)
class JobResult:
    # One mapping per input text, in input order: capability name -> result.
    per_text: list[dict[str, CapabilityResult]]
    window: WindowInfo


class CapabilityFailedError(Exception):
    """A capability the request needs failed on one of its texts."""

    def __init__(
        self, capability: str, text_index: int, reason: str, field: str | None = None
    ) -> None:
        self.capability = capability
        self.text_index = text_index
        self.reason = reason
        self.field = field or f"texts[{text_index}]"
        super().__init__(f"capability '{capability}' failed on {self.field}: {reason}")


class ClassificationPipeline:
    def __init__(
        self,
        registry: CapabilityRegistry,
        executor: PlanExecutor,
        observers: Sequence[WindowObserver] = (),
    ) -> None:
        self.registry = registry
        self.executor = executor
        self.observers = list(observers)

    async def run_window(
        self, jobs: Sequence[ClassifyJob], mode: str
    ) -> list[JobResult | BaseException]:
        started = time.monotonic()
        plan = build_plan(self.registry, [WorkItem(j.texts, j.capabilities) for j in jobs])
        outcome = await self.executor.run(plan)
        report = WindowReport(
            plan, outcome, mode, [(started - job.submitted_at) * 1000 for job in jobs]
        )
        for observer in self.observers:
            observer.window_finished(report)
        info = WindowInfo(
            id=next(_window_ids),
            mode=mode,
            requests=len(jobs),
            texts=plan.total_texts,
            unique_texts=len(plan.texts),
            capability_executions=plan.capability_executions,
            naive_equivalent_executions=plan.naive_equivalent_executions,
        )
        return [self._split(plan, outcome, i, job, info) for i, job in enumerate(jobs)]

    @staticmethod
    def _split(
        plan: BatchPlan, outcome: WindowOutcome, index: int, job: ClassifyJob, info: WindowInfo
    ) -> JobResult | BaseException:
        planned = plan.requests[index]
        for position, tid in enumerate(planned.text_ids):
            for name in planned.closure:
                reason = outcome.failures[name].get(tid)
                if reason is not None:
                    return CapabilityFailedError(name, position, reason)
        shown = planned.closure if job.include_dependencies else planned.requested
        per_text = [
            {name: outcome.results[name][tid] for name in shown} for tid in planned.text_ids
        ]
        return JobResult(per_text=per_text, window=info)
