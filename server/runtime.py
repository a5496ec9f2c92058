"""Assembles the server from its configuration: registry, processor pool, pipeline, dispatchers.

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
from typing import Protocol

from capabilities.plan import WorkItem, build_plan
from capabilities.registry import CapabilityRegistry
from processors.engines import EngineWork, apply_engine_env
from processors.pool import ProcessorPool
from schemas.config import CapServeConfig
from server.batching.dispatch import BatchedDispatcher, Dispatcher, NaiveDispatcher
from server.caching.factory import build_result_lookup
from server.execution.executor import PlanExecutor, ProcessorSource
from server.execution.pipeline import (
    CapabilityFailedError,
    ClassificationPipeline,
    ClassifyJob,
    JobResult,
)
from server.observability.stats import ServerStats
from server.registry_loading import load_registry
from server.validation import check_request

log = logging.getLogger(__name__)


class RequestTimeoutError(Exception):
    """A request ran past `limits.request_timeout_s` (HTTP 504)."""


WARMUP_TEXT = "capserve warm-up: is this text about anything at all?"


class Pool(ProcessorSource, Protocol):
    async def start(self) -> None: ...

    def stop(self) -> None: ...

    async def health(self) -> dict[str, str]: ...

    def work(self) -> dict[str, EngineWork]: ...

    @property
    def engine_constructions(self) -> int: ...


class Runtime:
    def __init__(self, config: CapServeConfig, registry: CapabilityRegistry, pool: Pool) -> None:
        self.config = config
        self.registry = registry
        self.pool = pool
        self.cache = build_result_lookup(config.cache, registry)
        self.stats = ServerStats(cache=self.cache)
        self.pipeline = ClassificationPipeline(
            registry,
            PlanExecutor(registry, pool),
            observers=[self.stats],
            cache=self.cache,
            dedup=config.batching.dedup,
        )
        batching = config.batching
        self.dispatchers: dict[str, Dispatcher] = {
            "batched": BatchedDispatcher(
                self.pipeline,
                batching.window_ms / 1000.0,
                batching.max_texts_per_window,
                batching.max_concurrent_windows if batching.adaptive else None,
            ),
            "naive": NaiveDispatcher(self.pipeline),
        }
        self.started = False

    @classmethod
    def build(cls, config: CapServeConfig, pool: Pool | None = None) -> Runtime:
        """Loads and checks the capabilities; with no pool given, one with real vLLM engines."""
        registry = load_registry(config)
        if pool is None:
            assert config.models_dir is not None
            apply_engine_env(config.engine_env)
            engine_pool = ProcessorPool(
                config.models, config.models_dir, prompting=config.prompting
            )
            engine_pool.check_models()  # a missing model is reported before anything starts
            pool = engine_pool
        return cls(config, registry, pool)

    async def start(self) -> None:
        await self.pool.start()
        if self.config.server.warmup:
            await self._warm_up()
        self.started = True
        log.info(
            "ready: %d capabilities, batching mode %s, window %.0f ms",
            len(self.registry.names()),
            self.config.batching.mode,
            self.config.batching.window_ms,
        )

    async def _warm_up(self) -> None:
        """Runs every capability once, outside the stats; a failure stops the start-up."""
        plan = build_plan(self.registry, [WorkItem((WARMUP_TEXT,), tuple(self.registry.names()))])
        outcome = await self.pipeline.executor.run(plan)
        failed = sorted(
            f"capability '{name}' failed: {reason}"
            for name, failures in outcome.failures.items()
            for reason in failures.values()
        )
        if failed:
            raise RuntimeError(f"warm-up failed: {'; '.join(failed)}")
        log.info("warm-up done: %d capabilities ran once", len(plan.steps))

    async def stop(self) -> None:
        self.started = False
        grace = self.config.limits.request_timeout_s  # no accepted request waits longer anyway
        for dispatcher in self.dispatchers.values():
            await dispatcher.close(grace)
        await asyncio.to_thread(self.pool.stop)  # engine shutdown blocks
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
    ) -> JobResult:
        """Classifies texts.

        Raises RequestRejectedError or UnknownCapabilityError for a bad request (nothing runs),
        CapabilityFailedError when a needed capability failed on one of the texts, and
        RequestTimeoutError after `limits.request_timeout_s`.
        """
        check_request(texts, capabilities, self.config.limits, text_field)
        self.registry.check_known(capabilities)
        job = ClassifyJob(tuple(texts), tuple(capabilities), include_dependencies)
        timeout = self.config.limits.request_timeout_s
        ok = False
        try:
            result = await asyncio.wait_for(self._answer(job, mode), timeout)
            ok = True
            return result
        except TimeoutError:
            raise RequestTimeoutError(f"the request did not finish within {timeout:g} s") from None
        except CapabilityFailedError as exc:
            if text_field == "text":  # a single-text request calls its text `text`
                raise CapabilityFailedError(exc.capability, 0, exc.reason, "text") from None
            raise
        finally:
            self.stats.record_request((time.monotonic() - job.submitted_at) * 1000, ok)

    async def _answer(self, job: ClassifyJob, mode: str | None) -> JobResult:
        """From the result cache at once when it holds every result, else through a window."""
        arrival = await self.pipeline.on_arrival(job)
        if arrival.result is not None:
            self.stats.record_cache_answer(arrival.executions_saved)
            return arrival.result
        return await self.dispatcher(mode).submit(arrival.job)
