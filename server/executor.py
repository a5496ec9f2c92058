"""Runs a BatchPlan: each capability once over its texts, as soon as its dependencies are done.

Capabilities with no dependency between them run at the same time. A failed capability fails
the capabilities that depend on it, and nothing else.
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
from processors.base import Processor, ProcessorError, ProcessorInput, WindowContext

log = logging.getLogger(__name__)


class ProcessorSource(Protocol):
    def processor_for(self, spec: CapabilitySpec) -> Processor: ...


@dataclass
class WindowOutcome:
    # capability -> unique text index -> result
    results: dict[str, dict[int, CapabilityResult]] = field(default_factory=dict)
    # capability -> error message (never holds text)
    errors: dict[str, str] = field(default_factory=dict)
    # capability -> seconds spent in its processor
    seconds: dict[str, float] = field(default_factory=dict)


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
        failed = [dep for dep in step.depends_on if dep in outcome.errors]
        if failed:
            outcome.errors[step.capability] = f"dependency '{failed[0]}' failed"
            return
        spec = self.registry.get(step.capability)
        inputs = [
            ProcessorInput(plan.texts[tid], self._deps_for(spec, tid, outcome.results))
            for tid in step.text_ids
        ]
        started = time.perf_counter()
        try:
            results = await self.processors.processor_for(spec).run(spec, inputs, context)
            if len(results) != len(inputs):
                raise ProcessorError(spec.name, f"{len(results)} results for {len(inputs)} texts")
        except asyncio.CancelledError:
            raise
        except ProcessorError as exc:
            log.error("%s", exc)
            outcome.errors[spec.name] = str(exc)
            return
        except Exception as exc:
            # Engine messages may quote the prompt: only the exception type leaves this place.
            log.error(
                "capability '%s' failed on %d texts: %s", spec.name, len(inputs), type(exc).__name__
            )
            outcome.errors[spec.name] = f"capability '{spec.name}' failed: {type(exc).__name__}"
            return
        finally:
            outcome.seconds[spec.name] = time.perf_counter() - started
        outcome.results[spec.name] = dict(zip(step.text_ids, results, strict=True))

    @staticmethod
    def _deps_for(
        spec: CapabilitySpec, text_id: int, results: Mapping[str, Mapping[int, CapabilityResult]]
    ) -> dict[str, CapabilityResult]:
        return {dep: results[dep][text_id] for dep in spec.depends_on}
