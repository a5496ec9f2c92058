"""How a request reaches the pipeline: merged into a window (batched) or on its own (naive).

Naive mode is the honest baseline: same engines, same pipeline, but each request runs its own
capabilities the moment it arrives. Concurrent naive requests still reach the engines
concurrently, where vLLM batches them as any async server would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from server.batching.batcher import (
    BatcherClosedError,
    BatcherState,
    RequestBatcher,
    finish_or_cancel,
)
from server.batching.priority import rank
from server.execution.answer import JobResult
from server.execution.pipeline import ClassificationPipeline, ClassifyJob


class Dispatcher(Protocol):
    mode: str

    async def submit(self, job: ClassifyJob) -> JobResult: ...

    async def close(self, grace_seconds: float | None = None) -> None: ...

    def state(self) -> BatcherState: ...


class BatchedDispatcher:
    mode = "batched"

    def __init__(
        self,
        pipeline: ClassificationPipeline,
        window_seconds: float,
        max_texts: int,
        max_running: int | None = None,
        release_on_submit: bool = True,
    ) -> None:
        """`max_running`: at most this many windows at once, with adaptive windows (see
        RequestBatcher); None: fixed windows of `window_seconds`, unbounded in number.
        `release_on_submit`: a window frees its slot once its engine requests are all sent,
        not when it ends."""

        async def handle(jobs: Sequence[ClassifyJob]) -> list[JobResult | BaseException]:
            submitted = self.batcher.release_slot if release_on_submit else None
            return await pipeline.run_window(jobs, self.mode, submitted)

        self.batcher: RequestBatcher[ClassifyJob, JobResult] = RequestBatcher(
            handle,
            window_seconds,
            max_texts,
            size_of=lambda job: len(job.texts),
            max_running=max_running,
            group_of=lambda job: job.capability_set,  # a window runs on one capability set
            rank_of=lambda job: rank(job.priority),
        )

    async def submit(self, job: ClassifyJob) -> JobResult:
        return await self.batcher.submit(job)

    def state(self) -> BatcherState:
        return self.batcher.state()

    async def close(self, grace_seconds: float | None = None) -> None:
        await self.batcher.close(grace_seconds)


class NaiveDispatcher:
    mode = "naive"

    def __init__(self, pipeline: ClassificationPipeline) -> None:
        self.pipeline = pipeline
        self._running: set[asyncio.Task[list[JobResult | BaseException]]] = set()
        self._closed = False
        self._dispatched = 0

    async def submit(self, job: ClassifyJob) -> JobResult:
        if self._closed:
            raise BatcherClosedError("the server is shutting down")
        task = asyncio.ensure_future(self.pipeline.run_window([job], self.mode))
        self._dispatched += 1
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            (result,) = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and self._closed and not (current and current.cancelling()):
                raise BatcherClosedError(
                    "the server shut down before this request finished"
                ) from None
            raise
        if isinstance(result, BaseException):
            raise result
        return result

    def state(self) -> BatcherState:
        """Every request is a window of its own, started at once: none waits or gathers."""
        return BatcherState(len(self._running), 0, 0, self._dispatched)

    async def close(self, grace_seconds: float | None = None) -> None:
        """Refuses new requests, and waits for the running ones up to `grace_seconds`."""
        self._closed = True
        await finish_or_cancel(self._running, grace_seconds)
