from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from server.batching.batcher import BatcherClosedError, RequestBatcher


class Recorder:
    def __init__(self, delay: float = 0.0, fail: BaseException | None = None) -> None:
        self.windows: list[list[int]] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.windows.append(list(items))
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return [item * 10 if item >= 0 else ValueError(f"bad {item}") for item in items]


async def test_concurrent_submissions_share_one_window():
    handler = Recorder()
    batcher: RequestBatcher[int, int] = RequestBatcher(handler, window_seconds=0.05)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert handler.windows == [list(range(20))]


async def test_window_closes_on_time_and_later_items_open_a_new_one():
    handler = Recorder()
    batcher: RequestBatcher[int, int] = RequestBatcher(handler, window_seconds=0.02)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.06)
    second = asyncio.create_task(batcher.submit(2))
    assert await first == 10 and await second == 20
    assert handler.windows == [[1], [2]]


async def test_window_closes_at_once_when_full():
    handler = Recorder()
    batcher: RequestBatcher[int, int] = RequestBatcher(
        handler, window_seconds=10.0, max_size=4, size_of=lambda item: 2
    )
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(4))), 1.0)
    assert results == [0, 10, 20, 30]
    assert handler.windows == [[0, 1], [2, 3]]


async def test_an_item_larger_than_the_window_gets_its_own_window():
    handler = Recorder()
    batcher: RequestBatcher[int, int] = RequestBatcher(
        handler, window_seconds=0.02, max_size=3, size_of=lambda item: 5 if item == 9 else 1
    )
    results = await asyncio.gather(batcher.submit(1), batcher.submit(9), batcher.submit(2))
    assert list(results) == [10, 90, 20]
    assert handler.windows == [[1], [9], [2]]


async def test_handler_exception_reaches_every_waiting_caller():
    batcher: RequestBatcher[int, int] = RequestBatcher(
        Recorder(fail=RuntimeError("engine down")), window_seconds=0.01
    )
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "engine down" for r in results)


async def test_per_item_errors_reach_only_their_caller():
    batcher: RequestBatcher[int, int] = RequestBatcher(Recorder(), window_seconds=0.01)
    results = await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
    assert results[0] == 10
    assert isinstance(results[1], ValueError)


async def test_a_cancelled_caller_does_not_break_the_window():
    handler = Recorder(delay=0.05)
    batcher: RequestBatcher[int, int] = RequestBatcher(handler, window_seconds=0.01)
    leaving = asyncio.create_task(batcher.submit(1))
    staying = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.02)
    leaving.cancel()
    assert await staying == 20


async def test_close_runs_pending_work_then_refuses_new_submissions():
    handler = Recorder()
    batcher: RequestBatcher[int, int] = RequestBatcher(handler, window_seconds=10.0)
    pending = asyncio.create_task(batcher.submit(7))
    await asyncio.sleep(0)
    await asyncio.wait_for(batcher.close(), 1.0)
    assert await pending == 70
    with pytest.raises(BatcherClosedError):
        await batcher.submit(8)


def test_bad_arguments_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="window_seconds must be > 0"):
        RequestBatcher(Recorder(), window_seconds=0)
    with pytest.raises(ValueError, match="max_size must be >= 1"):
        RequestBatcher(Recorder(), max_size=0)
