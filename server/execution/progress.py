"""A request's progress while it waits: the results found in the cache on arrival, the window
that runs it once it started (its outcome fills as steps finish), and whether its caller still
waits. The pipeline writes it; the runtime reads it when the request's deadline passes, and
marks the caller gone so that the window stops computing for it (the window hears of it at once,
see `when_left`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from capabilities.plan import BatchPlan, KnownResults
from capabilities.registry import CapabilityRegistry
from server.execution.answer import JobResult, Outcomes, WindowInfo, build_answer
from server.execution.executor import WindowOutcome


@dataclass(frozen=True)
class WindowView:
    """One request's place in a running window."""

    registry: CapabilityRegistry
    plan: BatchPlan
    outcome: WindowOutcome
    index: int
    info: WindowInfo

    def answer(self, partial: bool) -> JobResult | Exception | None:
        outcomes = Outcomes(self.outcome.results, self.outcome.failures)
        return build_answer(self.registry, self.plan, self.index, outcomes, self.info, partial)


@dataclass
class JobProgress:
    # Results the cache held on arrival, by (capability, text).
    cached: KnownResults = field(default_factory=dict)
    # Set when the request's window starts.
    window: WindowView | None = None
    # Called once when the caller leaves.
    _on_leave: list[Callable[[], None]] = field(default_factory=list)
    _left: bool = False

    @property
    def left(self) -> bool:
        """The caller left (deadline passed, or client gone): nothing more is computed for it."""
        return self._left

    @left.setter
    def left(self, value: bool) -> None:
        if self._left or not value:
            self._left = self._left or value
            return
        self._left = True
        callbacks, self._on_leave = self._on_leave, []
        for callback in callbacks:
            callback()

    def when_left(self, callback: Callable[[], None]) -> None:
        """Calls `callback` when the caller leaves (at once if it has left)."""
        if self._left:
            callback()
        else:
            self._on_leave.append(callback)
