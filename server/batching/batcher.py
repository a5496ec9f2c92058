"""RequestBatcher: gathers concurrent submissions into windows and hands each window over whole.

Two policies:

- adaptive (`max_running=n`): at most n windows run at once. While fewer run, the open window
  starts at once (on the event loop's next turn, so submissions made together still go
  together). While n run, it keeps gathering until one finishes; if it first reaches
  `window_seconds` (since its first submission) or `max_size`, it is sealed and waits, in FIFO
  order, for a free slot, and new submissions open the next window. The window thus grows with
  the load by itself, and adds almost nothing to latency at idle.
- fixed (`max_running=None`): a window is sealed `window_seconds` after its first submission, or
  when it holds `max_size`, and starts at once; windows are not bounded in number.

`window_seconds=0` gathers nothing: every submission is a window of its own.

`group_of` keeps submissions of different groups apart (the server groups requests by the
capability set they are bound to): a submission of another group than the open window's seals
that window and opens the next one, so every window holds one group.

A submission is never split across windows. Every submission's future is resolved: with its
result, or with the error that stopped it. The batcher knows nothing of capabilities, prompts
or engines.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

WindowHandler = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


class BatcherClosedError(RuntimeError):
    """Raised for submissions after close()."""


@dataclass(frozen=True)
class BatcherState:
    """What the batcher is doing now, and how many windows it handed over since start."""

    windows_running: int
    windows_waiting: int  # sealed, waiting for a free slot
    requests_gathering: int  # submissions in the open window
    windows_dispatched: int


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    submitted_at: float = field(default_factory=time.monotonic)


@dataclass
class _Window(Generic[Item, Result]):
    group: Hashable
    entries: list[_Pending[Item, Result]] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


def _one_group(_item: Any) -> Hashable:
    return None


class RequestBatcher(Generic[Item, Result]):
    def __init__(
        self,
        handle_window: WindowHandler[Item, Result],
        window_seconds: float = 0.1,
        max_size: int = 512,
        size_of: Callable[[Item], int] = lambda _item: 1,
        max_running: int | None = None,
        group_of: Callable[[Item], Hashable] = _one_group,
    ) -> None:
        if window_seconds < 0:
            raise ValueError(f"window_seconds must be >= 0, got {window_seconds!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size!r}")
        if max_running is not None and max_running < 1:
            raise ValueError(f"max_running must be >= 1 or None, got {max_running!r}")
        self._handle_window = handle_window
        self._window_seconds = window_seconds
        self._max_size = max_size
        self._size_of = size_of
        self._max_running = max_running
        self._group_of = group_of
        self._open: _Window[Item, Result] | None = None
        self._sealed: deque[_Window[Item, Result]] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._start_soon: asyncio.Handle | None = None
        self._closed = False
        self.windows_dispatched = 0

    async def submit(self, item: Item) -> Result:
        if self._closed:
            raise BatcherClosedError("the batcher is closed; the server is shutting down")
        loop = asyncio.get_running_loop()
        size = self._size_of(item)
        group = self._group_of(item)
        if self._open is not None and (
            self._open.size + size > self._max_size or self._open.group != group
        ):
            self._seal()  # the new item would overflow this window or mix groups: it opens the next
        window = self._open
        if window is None:
            window = self._open = _Window(group)
            if self._window_seconds > 0:
                window.timer = loop.call_later(self._window_seconds, self._on_timeout, window)
        pending: _Pending[Item, Result] = _Pending(item, loop.create_future())
        window.entries.append(pending)
        window.size += size
        if window.size >= self._max_size or self._window_seconds == 0:
            self._seal()
        elif self._max_running is not None and self._start_soon is None and self._has_free_slot():
            self._start_soon = loop.call_soon(self._start_soon_due)
        return await pending.future

    def state(self) -> BatcherState:
        return BatcherState(
            windows_running=len(self._running),
            windows_waiting=len(self._sealed),
            requests_gathering=0 if self._open is None else len(self._open.entries),
            windows_dispatched=self.windows_dispatched,
        )

    def _has_free_slot(self) -> bool:
        return self._max_running is None or len(self._running) < self._max_running

    def _on_timeout(self, window: _Window[Item, Result]) -> None:
        if window is self._open:
            self._seal()

    def _seal(self) -> None:
        """The open window takes no more submissions; it starts when a slot is free."""
        window = self._open
        if window is None:
            return
        self._open = None
        if window.timer is not None:
            window.timer.cancel()
        self._sealed.append(window)
        self._start_windows()

    def _start_soon_due(self) -> None:
        self._start_soon = None
        self._start_windows()

    def _start_windows(self) -> None:
        """While slots are free: sealed windows in FIFO order, then (adaptive) the open one."""
        while self._has_free_slot():
            if self._sealed:
                window = self._sealed.popleft()
            elif self._max_running is not None and self._open is not None:
                window, self._open = self._open, None
                if window.timer is not None:
                    window.timer.cancel()
            else:
                return
            live = [p for p in window.entries if not p.future.done()]  # cancelled callers left
            if not live:
                continue
            self.windows_dispatched += 1
            task = asyncio.get_running_loop().create_task(self._run(live))
            self._running.add(task)
            task.add_done_callback(self._window_finished)

    def _window_finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start_windows()

    async def _run(self, window: list[_Pending[Item, Result]]) -> None:
        try:
            results = await self._handle_window([p.item for p in window])
            if len(results) != len(window):
                raise RuntimeError(f"window handler gave {len(results)} results for {len(window)}")
        except asyncio.CancelledError:
            # Only close() cancels a window, once its grace period is over.
            _fail_all(window, BatcherClosedError(_STOPPED))
            raise
        except Exception as exc:
            _fail_all(window, exc)
            return
        for p, result in zip(window, results, strict=True):
            if p.future.done():
                continue
            if isinstance(result, BaseException):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)

    async def close(self, grace_seconds: float | None = None) -> None:
        """Refuses new submissions, runs the open and waiting windows, and waits for them.

        Waiting windows still start only as slots free up. After `grace_seconds`, windows still
        waiting never start and running ones are cancelled: their callers get a
        BatcherClosedError, and shutdown does not hang on a stuck engine.
        """
        self._closed = True
        self._seal()
        loop = asyncio.get_running_loop()
        deadline = None if grace_seconds is None else loop.time() + grace_seconds
        while self._running:
            timeout = None if deadline is None else deadline - loop.time()
            if timeout is not None and timeout <= 0:
                break
            await asyncio.wait(
                set(self._running), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        while self._sealed:  # first, so that no cancelled window makes room for one of these
            _fail_all(self._sealed.popleft().entries, BatcherClosedError(_STOPPED))
        await finish_or_cancel(self._running, 0)


_STOPPED = "the server shut down before this request finished"


def _fail_all(window: Sequence[_Pending[Any, Any]], error: BaseException) -> None:
    for p in window:
        if not p.future.done():
            p.future.set_exception(error)


async def finish_or_cancel(tasks: set[asyncio.Task[Any]], grace_seconds: float | None) -> None:
    """Waits for `tasks`, cancelling those still running after `grace_seconds`."""
    if not tasks:
        return
    _done, late = await asyncio.wait(set(tasks), timeout=grace_seconds)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late)
