"""Runs a BatchPlan: each capability once over its texts, as soon as its dependencies are done.

Capabilities with no dependency between them run at the same time. Failures are per text: a
text that fails in one capability fails in the capabilities that depend on it, and nothing else,
so one bad text does not cost the other texts of its window their results.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from capabilities.plan import BatchPlan, CapabilityStep
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import ItemFailure, Processor, ProcessorInput, WindowContext

log = logging.getLogger(__name__)


class ProcessorSource(Protocol):
    def processor_for(self, spec: CapabilitySpec) -> Processor: ...


@dataclass
class WindowOutcome:
    # capability -> unique text index -> result
    results: dict[str, dict[int, CapabilityResult]] = field(default_factory=dict)
    # capability -> unique text index -> why it failed (never holds text)
    failures: dict[str, dict[int, str]] = field(default_factory=dict)
    # capability -> seconds spent in its processor
    seconds: dict[str, float] = field(default_factory=dict)

    def failed_capabilities(self) -> list[str]:
        return [name for name, failed in self.failures.items() if failed]


class PlanExecutor:
    def __init__(self, registry: CapabilityRegistry, processors: ProcessorSource) -> None:
        self.registry = registry
        self.processors = processors

    async def run(self, plan: BatchPlan) -> WindowOutcome:
        outcome = WindowOutcome()
        context = WindowContext()
        tasks: dict[str, asyncio.Task[None]] = {}
        for step in plan.steps:  # dependency order: a step's dependencies have tasks already
            waits = [tasks[dep] for dep in step.depends_on]
            tasks[step.capability] = asyncio.create_task(
                self._run_step(plan, step, waits, context, outcome)
            )
        try:
            await asyncio.gather(*tasks.values())
        finally:
            for task in tasks.values():
                task.cancel()
        return outcome

    async def _run_step(
        self,
        plan: BatchPlan,
        step: CapabilityStep,
        waits: list[asyncio.Task[None]],
        context: WindowContext,
        outcome: WindowOutcome,
    ) -> None:
        await asyncio.gather(*waits)
        spec = self.registry.get(step.capability)
        results = outcome.results.setdefault(spec.name, {})
        failures = outcome.failures.setdefault(spec.name, {})
        ready = []
        for tid in step.text_ids:
            failed = [dep for dep in spec.depends_on if tid not in outcome.results[dep]]
            if failed:
                failures[tid] = f"dependency '{failed[0]}' failed"
            else:
                ready.append(tid)
        if not ready:
            return
        inputs = [
            ProcessorInput(plan.texts[tid], self._deps_for(spec, tid, outcome.results))
            for tid in ready
        ]
        started = time.perf_counter()
        try:
            outcomes = await self.processors.processor_for(spec).run(spec, inputs, context)
            if len(outcomes) != len(inputs):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(inputs)} texts")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Engine messages may quote the prompt: only the exception type leaves this place.
            reason = type(exc).__name__
            log.error("capability '%s' failed on all %d inputs: %s", spec.name, len(inputs), reason)
            failures.update({tid: reason for tid in ready})
            return
        finally:
            outcome.seconds[spec.name] = time.perf_counter() - started
        for tid, item in zip(ready, outcomes, strict=True):
            if isinstance(item, ItemFailure):
                failures[tid] = item.reason
            else:
                results[tid] = item
        if failures:
            log.error(
                "capability '%s' failed on %d of %d inputs",
                spec.name,
                len(failures),
                len(step.text_ids),
            )

    @staticmethod
    def _deps_for(
        spec: CapabilitySpec, text_id: int, results: Mapping[str, Mapping[int, CapabilityResult]]
    ) -> dict[str, CapabilityResult]:
        return {dep: results[dep][text_id] for dep in spec.depends_on}
