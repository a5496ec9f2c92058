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

A running window holds its slot until it ends, or until its handler calls `release_slot()`
(from the window's own task): the server releases it once the window's last engine request is
sent, so the next window gathers and plans while the engines work, and no engine waits on a
window's dependency waves or its Python tail. Released windows still run to the end, and
`close` still waits for them.

`group_of` keeps submissions of different groups apart (the server groups requests by the
capability set they are bound to): a submission of another group than the open window's seals
that window and opens the next one, so every window holds one group.

`rank_of` gives each submission a priority rank (0 first). Every rank has its own open window
and its own queue of sealed windows, and a free slot always goes to the lowest rank that has
work: its sealed windows in FIFO order, then (adaptive) its open one. A high-priority
submission thus goes into the next window that starts, and never waits behind lower-priority
windows that have not started; within a rank, order stays FIFO. Lower ranks may wait as long as
higher ones keep coming (bounded admission limits how much that can be).

A caller that leaves (its `submit` is cancelled: a deadline, a client gone) is dropped from its
window if the window has not started; a running window whose every caller left is cancelled,
which cancels its engine requests.

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
    # Running windows that released their slot (their engine work is all sent).
    windows_released: int = 0


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    submitted_at: float = field(default_factory=time.monotonic)


@dataclass
class _Window(Generic[Item, Result]):
    group: Hashable
    rank: int
    entries: list[_Pending[Item, Result]] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None
    # Set when the window starts: the task that runs it.
    task: asyncio.Task[None] | None = None


def _one_group(_item: Any) -> Hashable:
    return None


def _one_rank(_item: Any) -> int:
    return 0


class RequestBatcher(Generic[Item, Result]):
    def __init__(
        self,
        handle_window: WindowHandler[Item, Result],
        window_seconds: float = 0.1,
        max_size: int = 512,
        size_of: Callable[[Item], int] = lambda _item: 1,
        max_running: int | None = None,
        group_of: Callable[[Item], Hashable] = _one_group,
        rank_of: Callable[[Item], int] = _one_rank,
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
        self._rank_of = rank_of
        # By priority rank: the window gathering submissions, and sealed windows not started.
        self._open: dict[int, _Window[Item, Result]] = {}
        self._sealed: dict[int, deque[_Window[Item, Result]]] = {}
        self._running: set[asyncio.Task[None]] = set()
        # The running windows that hold a slot (all of them until they call release_slot).
        self._holding: set[asyncio.Task[Any]] = set()
        self._start_soon: asyncio.Handle | None = None
        self._closed = False
        self.windows_dispatched = 0

    async def submit(self, item: Item) -> Result:
        if self._closed:
            raise BatcherClosedError("the batcher is closed; the server is shutting down")
        loop = asyncio.get_running_loop()
        size = self._size_of(item)
        group = self._group_of(item)
        rank = self._rank_of(item)
        window = self._open.get(rank)
        if window is not None and (window.size + size > self._max_size or window.group != group):
            self._seal(rank)  # the new item would overflow this window or mix groups
            window = None
        if window is None:
            window = self._open[rank] = _Window(group, rank)
            if self._window_seconds > 0:
                window.timer = loop.call_later(self._window_seconds, self._on_timeout, window)
        pending: _Pending[Item, Result] = _Pending(item, loop.create_future())
        window.entries.append(pending)
        window.size += size
        if window.size >= self._max_size or self._window_seconds == 0:
            self._seal(rank)
        elif self._max_running is not None and self._start_soon is None and self._has_free_slot():
            self._start_soon = loop.call_soon(self._start_soon_due)
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._caller_left(window)
            raise

    def _caller_left(self, window: _Window[Item, Result]) -> None:
        """Cancels a running window once none of its callers waits for it any more."""
        task = window.task
        if task is not None and not task.done() and all(p.future.done() for p in window.entries):
            task.cancel()

    def state(self) -> BatcherState:
        return BatcherState(
            windows_running=len(self._running),
            windows_waiting=sum(len(queue) for queue in self._sealed.values()),
            requests_gathering=sum(len(window.entries) for window in self._open.values()),
            windows_dispatched=self.windows_dispatched,
            windows_released=len(self._running) - len(self._holding),
        )

    def release_slot(self) -> None:
        """Called from a running window's task: it keeps running, but no longer counts against
        `max_running`; the next window may start. Anywhere else (or twice): nothing."""
        task = asyncio.current_task()
        if task in self._holding:
            self._holding.discard(task)
            self._start_windows()

    def _has_free_slot(self) -> bool:
        return self._max_running is None or len(self._holding) < self._max_running

    def _on_timeout(self, window: _Window[Item, Result]) -> None:
        if self._open.get(window.rank) is window:
            self._seal(window.rank)

    def _seal(self, rank: int) -> None:
        """The open window of `rank` takes no more submissions; it starts when a slot is free."""
        window = self._open.pop(rank, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        self._sealed.setdefault(rank, deque()).append(window)
        self._start_windows()

    def _start_soon_due(self) -> None:
        self._start_soon = None
        self._start_windows()

    def _next_window(self) -> _Window[Item, Result] | None:
        """The lowest rank with work: its oldest sealed window, else (adaptive) its open one."""
        for rank in sorted(self._sealed.keys() | self._open.keys()):
            queue = self._sealed.get(rank)
            if queue:
                return queue.popleft()
            if self._max_running is not None and rank in self._open:
                window = self._open.pop(rank)
                if window.timer is not None:
                    window.timer.cancel()
                return window
        return None

    def _start_windows(self) -> None:
        """While slots are free, starts the next window (see `_next_window`)."""
        while self._has_free_slot():
            window = self._next_window()
            if window is None:
                return
            window.entries = [p for p in window.entries if not p.future.done()]  # callers left
            if not window.entries:
                continue
            self.windows_dispatched += 1
            task = asyncio.get_running_loop().create_task(self._run(window.entries))
            window.task = task
            self._running.add(task)
            self._holding.add(task)
            task.add_done_callback(self._window_finished)

    def _window_finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._holding.discard(task)
        self._start_windows()

    async def _run(self, window: list[_Pending[Item, Result]]) -> None:
        try:
            results = await self._handle_window([p.item for p in window])
            if len(results) != len(window):
                raise RuntimeError(f"window handler gave {len(results)} results for {len(window)}")
        except asyncio.CancelledError:
            # close() after its grace period, or every caller left (then nobody is told).
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
        for rank in list(self._open):
            self._seal(rank)
        loop = asyncio.get_running_loop()
        deadline = None if grace_seconds is None else loop.time() + grace_seconds
        while self._running:
            timeout = None if deadline is None else deadline - loop.time()
            if timeout is not None and timeout <= 0:
                break
            await asyncio.wait(
                set(self._running), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        # First, so that no cancelled window makes room for one of these.
        for queue in self._sealed.values():
            while queue:
                _fail_all(queue.popleft().entries, BatcherClosedError(_STOPPED))
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
