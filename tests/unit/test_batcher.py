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
    with pytest.raises(ValueError, match="window_seconds must be >= 0"):
        RequestBatcher(Recorder(), window_seconds=-0.1)
    with pytest.raises(ValueError, match="max_size must be >= 1"):
        RequestBatcher(Recorder(), max_size=0)
    with pytest.raises(ValueError, match="max_running must be >= 1 or None"):
        RequestBatcher(Recorder(), max_running=0)


# The adaptive window, with a handler whose windows finish only when the test says so.

HANG_GUARD_S = 5.0  # only stops a broken batcher from hanging the suite; no test measures speed


class Gated:
    """A window handler whose every call waits for its own release."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.windows: list[list[int]] = []
        self.gates: list[asyncio.Event] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail = fail
        self.open_all = False

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        gate = asyncio.Event()
        if self.open_all:
            gate.set()
        self.windows.append(list(items))
        self.gates.append(gate)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await gate.wait()
        finally:
            self.in_flight -= 1
        if self.fail is not None:
            raise self.fail
        return [item * 10 for item in items]

    def release(self, window: int) -> None:
        self.gates[window].set()

    def release_all(self) -> None:
        self.open_all = True
        for gate in self.gates:
            gate.set()

    async def started(self, count: int) -> None:
        """Waits until `count` windows have reached the handler."""

        async def poll() -> None:
            while len(self.windows) < count:
                await asyncio.sleep(0)

        await asyncio.wait_for(poll(), HANG_GUARD_S)


async def settle() -> None:
    """Lets every ready callback and task run (a few turns of the event loop)."""
    for _ in range(10):
        await asyncio.sleep(0)


def adaptive(handler: Gated | Recorder, k: int, **options: float) -> RequestBatcher[int, int]:
    window_seconds = options.pop("window_seconds", 10.0)
    max_size = int(options.pop("max_size", 512))
    return RequestBatcher(handler, window_seconds, max_size, max_running=k)


async def one_window_running(
    fail: BaseException | None = None, **options: float
) -> tuple[Gated, RequestBatcher[int, int], asyncio.Task[int]]:
    """An adaptive batcher with one slot, taken by the window of submission 0 until released."""
    handler = Gated(fail)
    batcher = adaptive(handler, 1, **options)
    first = asyncio.create_task(batcher.submit(0))
    await handler.started(1)
    return handler, batcher, first


async def test_at_idle_a_submission_starts_at_once_without_waiting_for_the_window():
    handler = Recorder()
    batcher = adaptive(handler, 2, window_seconds=10.0)
    assert await asyncio.wait_for(batcher.submit(4), HANG_GUARD_S) == 40
    assert handler.windows == [[4]]


async def test_submissions_made_together_at_idle_share_one_window():
    handler = Recorder()
    batcher = adaptive(handler, 2, window_seconds=10.0)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(i) for i in range(5))), HANG_GUARD_S
    )
    assert results == [0, 10, 20, 30, 40]
    assert handler.windows == [[0, 1, 2, 3, 4]]


async def test_never_more_than_k_windows_run_and_the_next_one_gathers_until_one_finishes():
    handler = Gated()
    batcher = adaptive(handler, 2, window_seconds=10.0)
    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(batcher.submit(i)))
        await settle()  # each arrives on its own, after the previous one started
    assert handler.windows == [[0], [1]]  # two start at once; the rest gather
    assert handler.in_flight == 2
    state = batcher.state()
    assert (state.windows_running, state.windows_waiting, state.requests_gathering) == (2, 0, 4)
    handler.release(1)
    await handler.started(3)
    assert handler.windows[2] == [2, 3, 4, 5]  # merged while both slots were busy
    tasks.append(asyncio.create_task(batcher.submit(6)))
    await settle()
    assert len(handler.windows) == 3 and batcher.state().requests_gathering == 1
    handler.release(0)
    await handler.started(4)
    assert handler.windows[3] == [6]
    handler.release_all()
    results = await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S)
    assert results == [i * 10 for i in range(7)]
    assert handler.max_in_flight == 2
    assert batcher.state().windows_dispatched == 4 and batcher.state().windows_running == 0


async def test_windows_sealed_at_max_size_wait_in_fifo_order():
    handler = Gated()
    batcher = adaptive(handler, 1, window_seconds=10.0, max_size=2)
    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(batcher.submit(i)))
        await settle()
    # [0] runs; [1, 2] and [3, 4] are sealed at max size and wait; [5] is still gathering.
    state = batcher.state()
    assert (state.windows_running, state.windows_waiting, state.requests_gathering) == (1, 2, 1)
    for window in range(4):
        handler.release(window)
        if window < 3:
            await handler.started(window + 2)
    assert handler.windows == [[0], [1, 2], [3, 4], [5]]
    assert await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S) == [0, 10, 20, 30, 40, 50]
    assert handler.max_in_flight == 1


async def test_a_window_sealed_on_time_waits_and_new_submissions_open_the_next():
    handler, batcher, first = await one_window_running(window_seconds=0.02)
    late = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.1)  # past window_seconds: the window of [1] is sealed
    assert batcher.state().windows_waiting == 1 and batcher.state().requests_gathering == 0
    later = asyncio.create_task(batcher.submit(2))
    await settle()
    assert batcher.state().requests_gathering == 1
    handler.release_all()
    results = await asyncio.wait_for(asyncio.gather(first, late, later), HANG_GUARD_S)
    assert list(results) == [0, 10, 20]
    assert handler.windows == [[0], [1], [2]]


async def test_window_zero_gathers_nothing():
    bounded = Gated()
    batcher = adaptive(bounded, 1, window_seconds=0)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await bounded.started(1)
    await settle()
    assert batcher.state().windows_waiting == 2  # each submission is a window of its own
    bounded.release_all()
    assert await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S) == [0, 10, 20]
    assert bounded.windows == [[0], [1], [2]] and bounded.max_in_flight == 1

    unbounded = Gated()  # fixed windows of 0 s: every submission starts at once
    fixed: RequestBatcher[int, int] = RequestBatcher(unbounded, window_seconds=0)
    tasks = [asyncio.create_task(fixed.submit(i)) for i in range(3)]
    await unbounded.started(3)
    assert unbounded.in_flight == 3
    unbounded.release_all()
    assert await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S) == [0, 10, 20]


async def test_fixed_windows_wait_for_their_time_and_are_not_bounded_in_number():
    handler = Gated()
    batcher: RequestBatcher[int, int] = RequestBatcher(handler, window_seconds=0.2)
    first = asyncio.create_task(batcher.submit(0))
    await settle()
    assert handler.windows == []  # unlike the adaptive window, it gathers even at idle
    await handler.started(1)
    tasks = [first]
    for i in range(1, 4):
        tasks.append(asyncio.create_task(batcher.submit(i)))
        await handler.started(i + 1)
    assert handler.in_flight == 4  # windows keep starting while the earlier ones run
    handler.release_all()
    assert await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S) == [0, 10, 20, 30]
    assert handler.windows == [[0], [1], [2], [3]]


async def test_close_runs_running_waiting_and_gathering_windows_and_resolves_every_future():
    handler = Gated()
    batcher = adaptive(handler, 1, window_seconds=10.0, max_size=2)
    tasks = []
    for i in range(4):  # [0] runs, [1, 2] waits sealed, [3] gathers
        tasks.append(asyncio.create_task(batcher.submit(i)))
        await settle()
    closing = asyncio.create_task(batcher.close())
    await settle()
    with pytest.raises(BatcherClosedError):
        await batcher.submit(9)
    handler.release_all()
    await asyncio.wait_for(closing, HANG_GUARD_S)
    assert [t.result() for t in tasks] == [0, 10, 20, 30]
    assert handler.windows == [[0], [1, 2], [3]] and handler.max_in_flight == 1


async def test_close_after_the_grace_cancels_running_windows_and_fails_waiting_ones():
    handler = Gated()  # never released: a stuck engine
    batcher = adaptive(handler, 1, window_seconds=10.0, max_size=1)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await handler.started(1)
    await asyncio.wait_for(batcher.close(grace_seconds=0.05), HANG_GUARD_S)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, BatcherClosedError) for r in results), results
    assert handler.windows == [[0]]  # the waiting windows never started


async def test_a_cancelled_caller_is_dropped_from_its_waiting_window():
    handler, batcher, first = await one_window_running()
    leaving = asyncio.create_task(batcher.submit(1))
    staying = asyncio.create_task(batcher.submit(2))
    await settle()
    leaving.cancel()
    handler.release(0)
    await handler.started(2)
    handler.release_all()
    assert await asyncio.wait_for(staying, HANG_GUARD_S) == 20
    assert await first == 0 and leaving.cancelled()
    assert handler.windows == [[0], [2]]


async def test_a_window_whose_callers_all_left_never_reaches_the_handler():
    handler, batcher, first = await one_window_running()
    gone = asyncio.create_task(batcher.submit(1))
    await settle()
    gone.cancel()
    handler.release(0)
    assert await asyncio.wait_for(first, HANG_GUARD_S) == 0
    later = asyncio.create_task(batcher.submit(2))  # a slot is free: it starts at once
    await handler.started(2)
    handler.release_all()
    assert await asyncio.wait_for(later, HANG_GUARD_S) == 20
    assert handler.windows == [[0], [2]] and batcher.state().windows_dispatched == 2


async def test_a_handler_exception_reaches_every_caller_of_a_merged_window():
    handler, batcher, first = await one_window_running(fail=RuntimeError("engine down"))
    tasks = [first] + [asyncio.create_task(batcher.submit(i)) for i in (1, 2, 3)]
    await settle()
    handler.release_all()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG_GUARD_S)
    assert all(isinstance(r, RuntimeError) and str(r) == "engine down" for r in results)
    assert handler.windows == [[0], [1, 2, 3]]


async def test_items_of_another_group_open_the_next_window():
    # The server groups requests by capability set: a window never mixes two sets.
    handler = Recorder()
    batcher: RequestBatcher[int, int] = RequestBatcher(
        handler, window_seconds=0.05, group_of=lambda item: item // 10
    )
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, 2, 11, 12, 3)))
    assert list(results) == [10, 20, 110, 120, 30]
    assert handler.windows == [[1, 2], [11, 12], [3]]


def prioritized(handler: Gated, k: int, max_size: int = 512) -> RequestBatcher[int, int]:
    """Items 100 and up are high priority (rank 0), the others normal (rank 1)."""
    return RequestBatcher(
        handler,
        10.0,
        max_size,
        max_running=k,
        rank_of=lambda item: 0 if item >= 100 else 1,
    )


async def test_a_high_submission_starts_before_waiting_normal_windows():
    handler = Gated()
    batcher = prioritized(handler, 1, max_size=2)
    tasks = [asyncio.create_task(batcher.submit(0))]
    await handler.started(1)
    for i in (1, 2, 3, 4, 5):  # [1, 2] and [3, 4] sealed at max size, [5] gathering
        tasks.append(asyncio.create_task(batcher.submit(i)))
        await settle()
    for i in (100, 101):
        tasks.append(asyncio.create_task(batcher.submit(i)))
        await settle()
    assert batcher.state().windows_waiting == 3  # [1, 2], [3, 4] and the full [100, 101]
    for window in range(5):
        handler.release(window)
        if window < 4:
            await handler.started(window + 2)
    # High first, then the normal windows in FIFO order.
    assert handler.windows == [[0], [100, 101], [1, 2], [3, 4], [5]]
    results = await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S)
    assert results == [0, 10, 20, 30, 40, 50, 1000, 1010]


async def test_a_gathering_high_window_goes_before_sealed_normal_ones():
    handler = Gated()
    batcher = prioritized(handler, 1, max_size=2)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in (0,)]
    await handler.started(1)
    for i in (1, 2, 100):
        tasks.append(asyncio.create_task(batcher.submit(i)))
        await settle()
    handler.release(0)
    await handler.started(2)
    assert handler.windows[1] == [100]  # not behind the sealed [1, 2]
    handler.release_all()
    await asyncio.wait_for(asyncio.gather(*tasks), HANG_GUARD_S)
    assert handler.windows == [[0], [100], [1, 2]]


async def test_a_running_window_whose_callers_all_left_is_cancelled():
    handler = Gated()
    batcher = adaptive(handler, 1)
    callers = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await handler.started(1)
    callers[0].cancel()
    await settle()
    assert batcher.state().windows_running == 1  # caller 2 still waits
    callers[1].cancel()
    await settle()
    # Nobody waits: the window was cancelled inside the handler.
    assert batcher.state().windows_running == 0 and handler.in_flight == 0
    # The slot is free again.
    task = asyncio.create_task(batcher.submit(7))
    await handler.started(2)
    handler.release_all()
    assert await asyncio.wait_for(task, HANG_GUARD_S) == 70


class Submitting(Gated):
    """A handler that, like the server's, frees its slot once its engine work is sent (here: at
    once), then waits for its gate as the engines would."""

    def __init__(self) -> None:
        super().__init__()
        self.batcher: RequestBatcher[int, int] | None = None

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        assert self.batcher is not None
        self.batcher.release_slot()
        self.batcher.release_slot()  # twice: nothing more
        return await super().__call__(items)


async def test_a_window_that_released_its_slot_lets_the_next_start_and_still_answers():
    handler = Submitting()
    batcher = adaptive(handler, 1, window_seconds=10.0)
    handler.batcher = batcher
    first = asyncio.create_task(batcher.submit(1))
    await handler.started(1)
    second = asyncio.create_task(batcher.submit(2))
    await handler.started(2)  # did not wait for the first window to end
    assert handler.max_in_flight == 2
    state = batcher.state()
    assert state.windows_running == 2 and state.windows_released == 2
    handler.release_all()
    assert list(await asyncio.wait_for(asyncio.gather(first, second), HANG_GUARD_S)) == [10, 20]
    assert batcher.state().windows_running == 0


async def test_release_slot_outside_a_window_changes_nothing():
    handler = Gated()
    batcher = adaptive(handler, 1, window_seconds=10.0)
    first = asyncio.create_task(batcher.submit(1))
    await handler.started(1)
    batcher.release_slot()  # the test's task is no window
    second = asyncio.create_task(batcher.submit(2))
    await settle()
    assert len(handler.windows) == 1 and batcher.state().requests_gathering == 1
    handler.release_all()
    assert list(await asyncio.wait_for(asyncio.gather(first, second), HANG_GUARD_S)) == [10, 20]
    assert handler.windows == [[1], [2]]


async def test_close_waits_for_released_windows_too():
    handler = Submitting()
    batcher = adaptive(handler, 1, window_seconds=10.0)
    handler.batcher = batcher
    first = asyncio.create_task(batcher.submit(3))
    await handler.started(1)
    closing = asyncio.create_task(batcher.close())
    await settle()
    assert not closing.done()  # the released window still runs
    handler.release_all()
    await asyncio.wait_for(closing, HANG_GUARD_S)
    assert await first == 30
