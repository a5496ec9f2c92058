"""Assembles the server from its configuration: capability set, processor pool, pipeline,
dispatchers; and puts a reloaded capability set in force.

`Runtime.classify` is also the in-process API for batch jobs:

    runtime = Runtime.build(load_config())
    await runtime.start()
    result = await runtime.classify(["some text"], ["sentiment"])
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from capabilities.plan import WorkItem
from capabilities.registry import CapabilityRegistry
from processors.engine_reaper import EngineReaper
from processors.engine_status import EngineStatus, EngineWork
from processors.engines import apply_engine_env
from processors.model_swap import EngineKey, ModelChanges
from processors.pool import ProcessorPool
from schemas.config import CapServeConfig
from server.batching.admission import AdmissionController
from server.batching.dispatch import BatchedDispatcher, Dispatcher, NaiveDispatcher
from server.batching.priority import Priority
from server.caching.factory import build_result_lookup
from server.caching.lookup import ResultLookup
from server.execution.answer import CapabilityFailedError, JobResult, TextTooLongError
from server.execution.capability_set import CapabilitySet, SetChanges, load_servable_registry
from server.execution.capability_watch import CapabilityWatch
from server.execution.deep_check import (
    DeepCheck,
    EngineProbe,
    cache_probe,
    probe_capabilities,
)
from server.execution.executor import ProcessorSource
from server.execution.model_reload import read_reloaded_config, start_engines
from server.execution.pipeline import ClassificationPipeline, ClassifyJob
from server.observability.drift import DriftMonitor
from server.observability.metrics import ServerMetrics
from server.observability.stats import ServerStats
from server.registry_loading import load_registry
from server.validation import RequestRejectedError, check_request

log = logging.getLogger(__name__)


class RequestTimeoutError(Exception):
    """A request's deadline passed before any of its results was finished (HTTP 504)."""


# How often a reload checks whether the sets on the engines it replaced are idle.
RETIRE_POLL_S = 0.05

WARMUP_TEXT = "capserve warm-up: is this text about anything at all?"

# starting: engines and warm-up under way; serving; stopping: draining, then engines stopping.
Phase = Literal["starting", "serving", "stopping"]


@dataclass(frozen=True)
class ReloadReport:
    # The new set is in force (false for a dry run).
    reloaded: bool
    dry_run: bool
    # How many capabilities the new set holds.
    capabilities: int
    changes: SetChanges
    # How the `models` section of the config file changed (engines started and closed).
    models: ModelChanges = field(default_factory=ModelChanges)
    # Other config sections that differ in the file: a reload does not apply them.
    restart_required: tuple[str, ...] = ()


class Pool(ProcessorSource, Protocol):
    async def start(self) -> None: ...

    def stop(self) -> None: ...

    async def health(self) -> dict[str, str]: ...

    def work(self) -> dict[str, EngineWork]: ...

    def engine_states(self) -> dict[str, EngineStatus]: ...

    def replica_states(self) -> dict[str, list[EngineStatus]]: ...

    def replica_work(self) -> dict[str, list[EngineWork]]: ...

    @property
    def engine_constructions(self) -> int: ...


class Runtime:
    def __init__(
        self,
        config: CapServeConfig,
        registry: CapabilityRegistry,
        pool: Pool,
        reaper: EngineReaper | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        # The file a reload re-reads the `models` section from; None: models never change.
        self.config_path = config_path
        self.pool = pool
        # Kills the engine processes if this process dies without stopping them (SIGKILL).
        self.reaper = reaper
        cache = build_result_lookup(config.cache, registry)
        # The cache counters are the same whatever set keys the results: the stats keep the first.
        self.drift = DriftMonitor.from_config(config.observability.drift)
        self.stats = ServerStats(cache=cache, drift=self.drift)
        self.metrics = ServerMetrics()  # Prometheus, in a registry of this runtime's own
        # Replaced whole, by one assignment, when a reload puts a new set in force.
        processors = pool.bound() if isinstance(pool, ProcessorPool) else pool
        self.capability_set = CapabilitySet.build(registry, processors, cache)
        self.pipeline = ClassificationPipeline(
            observers=[self.stats, self.drift, self.metrics], dedup=config.batching.dedup
        )
        batching = config.batching
        self.dispatchers: dict[str, Dispatcher] = {
            "batched": BatchedDispatcher(
                self.pipeline,
                batching.window_ms / 1000.0,
                batching.max_texts_per_window,
                batching.max_concurrent_windows if batching.adaptive else None,
                batching.release_slot_on_submit,
            ),
            "naive": NaiveDispatcher(self.pipeline),
        }
        admission = config.admission
        self.admission = AdmissionController(
            admission.max_admitted_texts,
            admission.retry_after_s,
            {"normal": admission.normal_priority_share, "low": admission.low_priority_share},
        )
        self.started = False
        self.phase: Phase = "starting"
        self._draining: asyncio.Task[None] | None = None
        self._deep_check_lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self._warm_ups: set[asyncio.Task[None]] = set()
        self._watch: CapabilityWatch | None = None
        # Sets a reload replaced, while requests or windows may still run on them.
        self._superseded: list[CapabilitySet] = []
        self._retirements: set[asyncio.Task[None]] = set()

    @property
    def registry(self) -> CapabilityRegistry:
        """The capabilities in force now."""
        return self.capability_set.registry

    @property
    def cache(self) -> ResultLookup | None:
        """The result cache, keyed by the versions in force now."""
        return self.capability_set.cache

    @classmethod
    def build(
        cls, config: CapServeConfig, pool: Pool | None = None, config_path: Path | None = None
    ) -> Runtime:
        """Loads and checks the capabilities; with no pool given, one with real vLLM engines.
        `config_path`: the file `config` was read from, which a reload re-reads models from."""
        registry = load_registry(config)
        reaper = None
        if pool is None:
            assert config.models_dir is not None
            apply_engine_env(config.engine_env)
            reaper = EngineReaper()
            engine_pool = ProcessorPool(
                config.models,
                config.models_dir,
                prompting=config.prompting,
                supervision=config.supervisor,
                on_engines_started=reaper.report_soon,
            )
            engine_pool.check_models()  # a missing model is reported before anything starts
            pool = engine_pool
        return cls(config, registry, pool, reaper, config_path)

    def model_dtypes(self) -> dict[str, str]:
        """Each model's precision: what its engine computes in once it is up, else the
        configured one (`auto` already resolved by the configuration)."""
        states = self.pool.engine_states()
        return {
            name: (states[name].dtype if name in states else None) or model.dtype
            for name, model in self.config.models.items()
        }

    @property
    def ready(self) -> bool:
        """Serving, with every engine up (false during start-up, restarts and shutdown)."""
        return self.phase == "serving" and all(
            status.up for status in self.pool.engine_states().values()
        )

    async def start(self) -> None:
        """Starts the engines (under their supervisor), warms every capability up, and starts
        serving. A failure raises; `stop` then stops what did start."""
        if self.reaper is not None:
            self.reaper.start()
        await self.pool.start()
        if self.config.server.warmup:
            await self._warm_up()
        if self.config.server.watch_capabilities:
            self._watch = CapabilityWatch(self.config.capabilities_dir, self.reload)
            await self._watch.start()
        self.started = True
        if self.phase == "starting":
            self.phase = "serving"
        log.info(
            "ready: %d capabilities, batching mode %s, window %.0f ms",
            len(self.registry.names()),
            self.config.batching.mode,
            self.config.batching.window_ms,
        )

    async def _warm_up(self) -> None:
        """Runs every capability once, outside the stats; a failure stops the start-up."""
        names = self.registry.names()
        failed = await self._run_once(self.capability_set, names)
        if failed:
            raise RuntimeError(f"warm-up failed: {'; '.join(failed)}")
        log.info("warm-up done: %d capabilities ran once", len(names))

    @staticmethod
    async def _run_once(capability_set: CapabilitySet, names: Sequence[str]) -> list[str]:
        """Runs `names` and their dependencies once on a fixed text, outside the stats and the
        cache; returns what failed (capability names and exception types, never text)."""
        plan = capability_set.plan([WorkItem((WARMUP_TEXT,), tuple(names))])
        outcome = await capability_set.executor.run(plan)
        return sorted(
            f"capability '{name}' failed: {reason}"
            for name, failures in outcome.failures.items()
            for reason in failures.values()
        )

    async def reload(self, dry_run: bool = False) -> ReloadReport:
        """Re-reads the capabilities folder and the config file's `models` section (with the
        environment overrides; other sections apply at restart only) and checks them as a
        whole; unless `dry_run`, starts an engine for each added or changed model, then puts
        the new set in force for the requests that arrive from now on. Windows in flight
        finish on the set, and the engines, their requests were accepted under; engines
        replaced or removed are closed once those are done (`server.shutdown_grace_s` at most).

        Raises CapabilityConfigError with every problem, or when an engine failed to start
        (its exception type); the current set and engines then stay, and nothing started is
        left running. Reloads run one at a time, so each compares against what the one before
        left.
        """
        async with self._reload_lock:
            reloaded = await asyncio.to_thread(read_reloaded_config, self.config, self.config_path)
            config = reloaded.config
            registry = await asyncio.to_thread(load_servable_registry, config)
            pool = self.pool if isinstance(self.pool, ProcessorPool) else None
            models = ModelChanges.between(self.config.models, config.models)
            current = self.capability_set
            new_versions = {spec.name: spec.version for spec in registry.specs()}
            changes = SetChanges.between(current.versions(), new_versions)
            report = ReloadReport(
                not dry_run,
                dry_run,
                len(new_versions),
                changes,
                models,
                reloaded.restart_required,
            )
            if dry_run:
                if pool is not None:  # the models must be found; nothing starts
                    await start_engines(pool, config.models, self.started, dry_run=True)
                return report
            if pool is None:  # processors without engines (tests): nothing to start
                self.capability_set = current.successor(registry)
            else:
                started = await start_engines(pool, config.models, self.started)
                retired = pool.install(started)  # no await from here to the swap
                self.capability_set = current.successor(registry, pool.bound())
                self._retire_when_idle(current, retired)
            self.config.models = dict(config.models)
            log.info(
                "capability set %d in force: %d capabilities, %d added, %d removed, %d changed; "
                "models: %d added, %d replaced, %d removed",
                self.capability_set.generation,
                len(new_versions),
                len(changes.added),
                len(changes.removed),
                len(changes.changed),
                len(models.added),
                len(models.replaced),
                len(models.removed),
            )
            self._warm_up_in_background(self.capability_set, changes.to_warm_up)
            return report

    def _retire_when_idle(self, superseded: CapabilitySet, engines: Sequence[EngineKey]) -> None:
        """Closes `engines` (replaced or removed by a reload) once no set that may run on them
        is in use any more, or after `server.shutdown_grace_s`."""
        self._superseded = [s for s in (*self._superseded, superseded) if s.usage.busy]
        if not engines:
            return
        sets = list(self._superseded)
        task = asyncio.create_task(self._close_when_idle(sets, engines))
        self._retirements.add(task)
        task.add_done_callback(self._retirements.discard)

    async def _close_when_idle(
        self, sets: Sequence[CapabilitySet], engines: Sequence[EngineKey]
    ) -> None:
        assert isinstance(self.pool, ProcessorPool)
        deadline = time.monotonic() + self.config.server.shutdown_grace_s
        while any(s.usage.busy for s in sets) and time.monotonic() < deadline:
            await asyncio.sleep(RETIRE_POLL_S)
        if any(s.usage.busy for s in sets):
            log.warning("closing %d replaced engine(s) with windows still on them", len(engines))
        await self.pool.close_retired(engines)
        log.info("closed %d engine(s) a reload replaced or removed", len(engines))

    def _warm_up_in_background(self, capability_set: CapabilitySet, names: Sequence[str]) -> None:
        """Runs the capabilities a reload added or changed once, so that their first request
        finds their per-version state built; no request waits for it."""
        if not names or not self.started or not self.config.server.warmup:
            return
        task = asyncio.create_task(self._warm_up_reloaded(capability_set, names))
        self._warm_ups.add(task)
        task.add_done_callback(self._warm_ups.discard)

    async def _warm_up_reloaded(self, capability_set: CapabilitySet, names: Sequence[str]) -> None:
        try:
            failed = await self._run_once(capability_set, names)
        except Exception as exc:  # a warm-up never fails anything but itself
            failed = [f"warm-up stopped: {type(exc).__name__}"]
        if failed:
            log.warning("warm-up after reload: %s", "; ".join(failed))
        else:
            log.info("warm-up after reload done: %d capabilities ran once", len(names))

    async def deep_check(self) -> DeepCheck:
        """Runs one capability per engine on a fixed text, outside the stats and the cache (one
        deep check at a time), each bounded by `supervisor.deep_check_timeout_s`."""
        async with self._deep_check_lock:
            capability_set = self.capability_set
            probes = probe_capabilities(capability_set.registry, self.pool.engine_states())
            results = await asyncio.gather(
                *(self._probe(capability_set, e, name) for e, name in probes.items())
            )
        cache = self.cache
        return DeepCheck(
            {probe.engine: probe for probe in results},
            cache_probe(None if cache is None else cache.snapshot()),
        )

    async def _probe(
        self, capability_set: CapabilitySet, engine: str, capability: str | None
    ) -> EngineProbe:
        status = self.pool.engine_states()[engine]
        if not status.up:
            return EngineProbe(engine, capability, False, f"engine {status.state}")
        if capability is None:  # nothing uses the engine: up is all there is to check
            return EngineProbe(engine, None, True)
        started = time.perf_counter()
        timeout = self.config.supervisor.deep_check_timeout_s
        try:
            failed = await asyncio.wait_for(self._run_once(capability_set, [capability]), timeout)
        except TimeoutError:
            failed = [f"no answer within {timeout:g} s"]
        except Exception as exc:
            failed = [type(exc).__name__]
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        return EngineProbe(engine, capability, not failed, "; ".join(failed) or None, latency_ms)

    async def drain(self) -> None:
        """Stops taking requests and lets the windows in flight finish within
        `server.shutdown_grace_s` (or `limits.request_timeout_s` if shorter); the requests
        still waiting or running then get 503 shutting_down. Idempotent: a second call waits
        for the first."""
        if self._draining is None:
            self.phase = "stopping"
            self._draining = asyncio.create_task(self._close_dispatchers())
        await asyncio.shield(self._draining)

    async def _close_dispatchers(self) -> None:
        # No request waits past its timeout anyway: a shorter one bounds the grace too.
        grace = min(self.config.server.shutdown_grace_s, self.config.limits.request_timeout_s)
        log.info("draining: the windows in flight get up to %g s", grace)
        await asyncio.gather(*(d.close(grace) for d in self.dispatchers.values()))

    async def stop(self) -> None:
        """Drains (bounded by the grace), then stops the engines, the reaper and the cache."""
        self.started = False
        self.phase = "stopping"
        if self._watch is not None:
            await self._watch.stop()
        for task in (*self._warm_ups, *self._retirements):
            task.cancel()
        await asyncio.gather(*self._warm_ups, *self._retirements, return_exceptions=True)
        await self.drain()
        await asyncio.to_thread(self.pool.stop)  # engine shutdown blocks
        if self.reaper is not None:
            await asyncio.to_thread(self.reaper.stop)
        if self.cache is not None:
            await self.cache.close()

    def dispatcher(self, mode: str | None = None) -> Dispatcher:
        return self.dispatchers[mode or self.config.batching.mode]

    async def classify(
        self,
        texts: Sequence[str],
        capabilities: Sequence[str],
        include_dependencies: bool = False,
        mode: str | None = None,
        text_field: str = "texts",
        tenant: str = "anonymous",
        priority: Priority = "normal",
        timeout_ms: int | None = None,
    ) -> JobResult:
        """Classifies texts, within `timeout_ms` (default `limits.request_timeout_s`).

        A text that fails gets its error in the result (`JobResult.errors`); when the deadline
        passes, the result holds what is finished (`partial`, `missing`).

        Raises RequestRejectedError or UnknownCapabilityError for a bad request (nothing runs),
        AdmissionRejectedError when the server is at capacity, CapabilityFailedError or
        TextTooLongError when every text failed, EngineUnavailableError when an engine it needs
        is down, and RequestTimeoutError when the deadline passed with nothing finished.
        """
        check_request(texts, capabilities, self.config.limits, text_field)
        timeout = self._deadline_s(timeout_ms)
        capability_set = self.capability_set  # the request is bound to the set in force now
        capability_set.registry.check_known(capabilities)
        job = ClassifyJob(
            capability_set,
            tuple(texts),
            tuple(capabilities),
            include_dependencies,
            tenant=tenant,
            priority=priority,
        )
        ok = False
        try:
            with capability_set.usage.held(), self.admission.admit(len(texts), priority):
                result = await self._within(job, mode, timeout)
            ok = True
            return result
        except CapabilityFailedError as exc:
            if text_field == "text":  # a single-text request calls its text `text`
                raise CapabilityFailedError(exc.capability, 0, exc.reason, "text") from None
            raise
        except TextTooLongError as exc:
            if text_field == "text":
                raise TextTooLongError(exc.capability, "text") from None
            raise
        finally:
            job.progress.left = True  # whatever ended the request, nothing more is done for it
            latency_ms = (time.monotonic() - job.submitted_at) * 1000
            self.stats.record_request(latency_ms, ok, tenant=tenant, texts=len(texts))

    def _deadline_s(self, timeout_ms: int | None) -> float:
        limits = self.config.limits
        if timeout_ms is None:
            return limits.request_timeout_s
        if timeout_ms <= 0 or timeout_ms > limits.max_request_timeout_s * 1000:
            raise RequestRejectedError(
                "timeout_ms",
                f"must be between 1 and {limits.max_request_timeout_s * 1000:.0f} "
                "(limits.max_request_timeout_s)",
            )
        return timeout_ms / 1000.0

    async def _within(self, job: ClassifyJob, mode: str | None, timeout: float) -> JobResult:
        """The whole answer, or at the deadline what is finished of it."""
        try:
            return await asyncio.wait_for(self._answer(job, mode), timeout)
        except TimeoutError:
            job.progress.left = True
            partial = self.pipeline.partial_answer(job)
            if isinstance(partial, Exception):
                raise partial from None
            if partial is None:
                raise RequestTimeoutError(
                    f"the request did not finish within {timeout:g} s, and none of its results "
                    "was ready"
                ) from None
            return partial

    async def _answer(self, job: ClassifyJob, mode: str | None) -> JobResult:
        """From the result cache at once when it holds every result, else through a window."""
        arrival = await self.pipeline.on_arrival(job)
        if arrival.result is not None:
            self.stats.record_cache_answer(arrival.executions_saved)
            return arrival.result
        return await self.dispatcher(mode).submit(arrival.job)
