"""Runs a BatchPlan: each capability once over its texts, as soon as its dependencies are done.

Steps run in waves: the steps whose dependencies are all done start together, and steps of one
wave that a processor can run as a group (LLM questions about the same texts on one engine) are
handed to it in one call, so it can send each text's questions to the engine together.
Capabilities with no dependency between them run at the same time.

Failures are per text: a text that fails in one capability fails in the capabilities that depend
on it, and nothing else, so one bad text does not cost the other texts of its window their
results.

Conditions are applied before a step's texts go to its processor: a text whose `when` does not
hold, or one of whose dependencies was skipped or gave an error result, gets a skipped result
and never reaches an engine.

Before each step, the texts that no waiting caller still needs (its `Demand` says which are) are
dropped: they get neither a result nor a failure, and never reach an engine. Inside a running
step too: each time a caller leaves, the texts that no waiting caller holds any more (for any
capability) are abandoned in the window's context, which cancels their engine work (vLLM aborts
those requests); the processors answer them with `ItemAbandoned`, and they are dropped like the
others: no result, no failure, nothing cached. The other texts of the step are not touched. The
outcome is filled as steps finish, so a caller whose deadline passes can read what is done so
far.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from capabilities.conditions import ConditionEvaluationError, parse_condition
from capabilities.plan import BatchPlan, CapabilityStep
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import (
    ItemAbandoned,
    ItemFailure,
    ItemOutcome,
    Processor,
    ProcessorInput,
    StepWork,
    WindowContext,
    as_grouped,
)

log = logging.getLogger(__name__)


class ProcessorSource(Protocol):
    def processor_for(self, spec: CapabilitySpec) -> Processor: ...


class Demand(Protocol):
    def __call__(self, capability: str) -> set[int]:
        """The unique text indices some waiting caller still needs `capability` for."""
        ...

    def when_changed(self, callback: Callable[[], None]) -> None:
        """Calls `callback` (on the event loop) each time a caller stops waiting."""
        ...


@dataclass
class WindowOutcome:
    # capability -> unique text index -> result
    results: dict[str, dict[int, CapabilityResult]] = field(default_factory=dict)
    # capability -> unique text index -> why it failed (never holds text)
    failures: dict[str, dict[int, str]] = field(default_factory=dict)
    # capability -> seconds spent in its processor (a group's time is shared out evenly)
    seconds: dict[str, float] = field(default_factory=dict)
    # capability -> texts skipped before its processor ran (`when` false, or a dependency
    # skipped or in error): executions the conditions saved.
    skipped: dict[str, int] = field(default_factory=dict)
    # capability -> unique text indices dropped before it ran: no waiting caller needed them.
    dropped: dict[str, set[int]] = field(default_factory=dict)

    def failed_capabilities(self) -> list[str]:
        return [name for name, failed in self.failures.items() if failed]


@dataclass
class _Batch:
    """Steps that start together and run in one processor call (one step unless grouped)."""

    processor: Processor | None
    steps: list[CapabilityStep]


class PlanExecutor:
    def __init__(self, registry: CapabilityRegistry, processors: ProcessorSource) -> None:
        self.registry = registry
        self.processors = processors

    async def run(
        self,
        plan: BatchPlan,
        known: Mapping[str, Mapping[int, CapabilityResult]] | None = None,
        outcome: WindowOutcome | None = None,
        demand: Demand | None = None,
        on_submitted: Callable[[], None] | None = None,
    ) -> WindowOutcome:
        """Runs every step of `plan`. `known` holds results already at hand (e.g. cached), by
        capability and unique text index: they serve as dependency results and are not run.
        `outcome` (filled as steps finish) is the one returned; `demand`: see the module.
        `on_submitted` is called once, as soon as no step that uses a model waits to start
        (what is left is the engines' work and steps without a model)."""
        outcome = WindowOutcome() if outcome is None else outcome
        for name, results in (known or {}).items():
            outcome.results.setdefault(name, {}).update(results)
        context = WindowContext()
        live = True
        if demand is not None:
            watched = demand

            def caller_left() -> None:
                if live:
                    context.abandon(self.abandoned_texts(plan, watched))

            watched.when_changed(caller_left)
            caller_left()
        waiting = {step.capability: step for step in plan.steps}
        planned = set(waiting)
        finished: set[str] = set()
        running: dict[asyncio.Task[None], _Batch] = {}
        try:
            while waiting or running:
                ready = [
                    step
                    for step in waiting.values()
                    if all(dep in finished or dep not in planned for dep in step.depends_on)
                ]
                for step in ready:
                    del waiting[step.capability]
                for batch in self._batches(ready):
                    task = asyncio.create_task(
                        self._run_batch(plan, batch, context, outcome, demand)
                    )
                    running[task] = batch
                if on_submitted is not None and not any(
                    self.registry.get(name).model is not None for name in waiting
                ):
                    on_submitted()
                    on_submitted = None
                if not running:
                    raise RuntimeError(f"steps {sorted(waiting)} wait on each other")
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    finished.update(step.capability for step in running.pop(task).steps)
                    task.result()
        finally:
            live = False
            for task in running:
                task.cancel()
        return outcome

    @staticmethod
    def abandoned_texts(plan: BatchPlan, demand: Demand) -> set[str]:
        """The window's texts that no waiting caller holds any more, for any capability (with
        dedup off, a text is abandoned only when every copy of it is)."""
        held: set[int] = set()
        for step in plan.steps:
            held |= demand(step.capability)
        kept = {plan.texts[tid] for tid in held}
        return {text for text in plan.texts if text not in kept}

    def _batches(self, ready: Sequence[CapabilityStep]) -> list[_Batch]:
        batches: dict[Hashable, _Batch] = {}
        for step in ready:
            spec = self.registry.get(step.capability)
            try:
                processor: Processor | None = self.processors.processor_for(spec)
            except LookupError:
                processor = None  # reported per text when the batch runs
            key: Hashable = step.capability
            grouped = as_grouped(processor)
            if grouped is not None:
                key = (id(grouped), grouped.group_key(spec))
            batches.setdefault(key, _Batch(processor, [])).steps.append(step)
        return list(batches.values())

    def _inputs(
        self,
        plan: BatchPlan,
        step: CapabilityStep,
        outcome: WindowOutcome,
        demand: Demand | None,
    ) -> tuple[list[int], list[ProcessorInput]]:
        """The texts of `step` to run, and their inputs. Texts nobody waits for are dropped;
        texts whose dependencies failed are marked failed; texts a condition rules out get a
        skipped result."""
        spec = self.registry.get(step.capability)
        failures = outcome.failures.setdefault(spec.name, {})
        results = outcome.results.setdefault(spec.name, {})
        ready: list[int] = []
        inputs: list[ProcessorInput] = []
        wanted = None if demand is None else demand(spec.name)
        for tid in step.text_ids:
            if wanted is not None and tid not in wanted:
                outcome.dropped.setdefault(spec.name, set()).add(tid)
                continue
            failed = [dep for dep in spec.depends_on if tid not in outcome.results.get(dep, {})]
            if failed:
                failures[tid] = f"dependency '{failed[0]}' failed"
                continue
            deps = {dep: outcome.results[dep][tid] for dep in spec.depends_on}
            reason = self.skip_reason(spec, deps)
            if reason is not None:
                results[tid] = CapabilityResult.skip(spec.name, spec.version, reason)
                outcome.skipped[spec.name] = outcome.skipped.get(spec.name, 0) + 1
                continue
            ready.append(tid)
            inputs.append(ProcessorInput(plan.texts[tid], deps))
        return ready, inputs

    @staticmethod
    def skip_reason(spec: CapabilitySpec, deps: Mapping[str, CapabilityResult]) -> str | None:
        """Why the capability does not run on a text with these dependency results, or None."""
        for name, result in deps.items():
            if result.skipped is not None:
                return f"dependency '{name}' was skipped"
            if result.error is not None:
                return f"dependency '{name}' gave no usable output ({result.error})"
        if spec.definition.when is None:
            return None
        condition = parse_condition(spec.definition.when)
        try:
            if condition.holds(deps):
                return None
        except ConditionEvaluationError as exc:
            return f"condition could not be evaluated: {exc}"
        return f"condition not met: {spec.definition.when}"

    async def _run_batch(
        self,
        plan: BatchPlan,
        batch: _Batch,
        context: WindowContext,
        outcome: WindowOutcome,
        demand: Demand | None,
    ) -> None:
        work: list[tuple[CapabilityStep, list[int], StepWork]] = []
        for step in batch.steps:
            ready, inputs = self._inputs(plan, step, outcome, demand)
            if ready:
                work.append((step, ready, StepWork(self.registry.get(step.capability), inputs)))
        if not work:
            return
        started = time.perf_counter()
        try:
            per_step = await self._call(batch.processor, [w for _, _, w in work], context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Engine messages may quote the prompt: only the exception type leaves this place.
            reason = type(exc).__name__
            for step, ready, _ in work:
                log.error(
                    "capability '%s' failed on all %d inputs: %s",
                    step.capability,
                    len(ready),
                    reason,
                )
                outcome.failures[step.capability].update({tid: reason for tid in ready})
            return
        finally:
            share = (time.perf_counter() - started) / len(work)
            for step, _, _ in work:
                outcome.seconds[step.capability] = share
        for (step, ready, _), outcomes in zip(work, per_step, strict=True):
            self._record(step, ready, outcomes, outcome)

    @staticmethod
    async def _call(
        processor: Processor | None, work: list[StepWork], context: WindowContext
    ) -> list[Sequence[ItemOutcome]]:
        if processor is None:
            names = ", ".join(w.spec.name for w in work)
            raise LookupError(f"no processor for capability {names}")
        grouped = as_grouped(processor)
        if grouped is not None:
            per_step = list(await grouped.run_group(work, context))
        else:
            (single,) = work
            per_step = [await processor.run(single.spec, single.inputs, context)]
        for w, outcomes in zip(work, per_step, strict=True):
            if len(outcomes) != len(w.inputs):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(w.inputs)} texts")
        return per_step

    @staticmethod
    def _record(
        step: CapabilityStep,
        ready: list[int],
        outcomes: Sequence[ItemOutcome],
        outcome: WindowOutcome,
    ) -> None:
        results = outcome.results[step.capability]
        failures = outcome.failures[step.capability]
        for tid, item in zip(ready, outcomes, strict=True):
            if isinstance(item, ItemAbandoned):  # nobody waits for it: nobody's result
                outcome.dropped.setdefault(step.capability, set()).add(tid)
            elif isinstance(item, ItemFailure):
                failures[tid] = item.reason
            else:
                results[tid] = item
        if failures:
            log.error(
                "capability '%s' failed on %d of %d inputs",
                step.capability,
                len(failures),
                len(step.text_ids),
            )
