"""RequestBatcher: gathers concurrent submissions into windows and hands each window over whole.

A window opens with its first submission and closes when `window_seconds` have passed since
then, or at once when it holds `max_size` (a submission is never split across windows).
Every submission's future is resolved: with its result, or with the error that stopped it.
The batcher knows nothing of capabilities, prompts or engines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

WindowHandler = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


class BatcherClosedError(RuntimeError):
    """Raised for submissions after close()."""


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    submitted_at: float = field(default_factory=time.monotonic)


class RequestBatcher(Generic[Item, Result]):
    def __init__(
        self,
        handle_window: WindowHandler[Item, Result],
        window_seconds: float = 0.1,
        max_size: int = 512,
        size_of: Callable[[Item], int] = lambda _item: 1,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size!r}")
        self._handle_window = handle_window
        self._window_seconds = window_seconds
        self._max_size = max_size
        self._size_of = size_of
        self._pending: list[_Pending[Item, Result]] = []
        self._pending_size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self.windows_dispatched = 0

    async def submit(self, item: Item) -> Result:
        if self._closed:
            raise BatcherClosedError("the batcher is closed; the server is shutting down")
        loop = asyncio.get_running_loop()
        size = self._size_of(item)
        if self._pending and self._pending_size + size > self._max_size:
            self._flush()  # the new item would overflow this window: it opens the next one
        pending: _Pending[Item, Result] = _Pending(item, loop.create_future())
        self._pending.append(pending)
        self._pending_size += size
        if self._pending_size >= self._max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window_seconds, self._flush)
        return await pending.future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        window, self._pending, self._pending_size = self._pending, [], 0
        live = [p for p in window if not p.future.done()]  # a cancelled caller left already
        if not live:
            return
        self.windows_dispatched += 1
        task = asyncio.get_running_loop().create_task(self._run(live))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, window: list[_Pending[Item, Result]]) -> None:
        try:
            results = await self._handle_window([p.item for p in window])
            if len(results) != len(window):
                raise RuntimeError(f"window handler gave {len(results)} results for {len(window)}")
        except asyncio.CancelledError:
            # Only close() cancels a window, once its grace period is over.
            stopped = BatcherClosedError("the server shut down before this request finished")
            for p in window:
                if not p.future.done():
                    p.future.set_exception(stopped)
            raise
        except Exception as exc:
            for p in window:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, result in zip(window, results, strict=True):
            if p.future.done():
                continue
            if isinstance(result, BaseException):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)

    async def close(self, grace_seconds: float | None = None) -> None:
        """Refuses new submissions, runs what is pending, and waits for running windows.

        Windows still running after `grace_seconds` are cancelled: their callers get a
        BatcherClosedError, and shutdown does not hang on a stuck engine.
        """
        self._closed = True
        if self._pending:
            self._flush()
        await finish_or_cancel(self._running, grace_seconds)


async def finish_or_cancel(tasks: set[asyncio.Task[Any]], grace_seconds: float | None) -> None:
    """Waits for `tasks`, cancelling those still running after `grace_seconds`."""
    if not tasks:
        return
    _done, late = await asyncio.wait(set(tasks), timeout=grace_seconds)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late)
