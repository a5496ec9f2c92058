"""The finished-window hook: everything that watches windows (stats today, metrics and drift
later) is a WindowObserver, told once per window after its results are known."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from capabilities.plan import BatchPlan
from server.execution.executor import WindowOutcome


@dataclass(frozen=True)
class WindowReport:
    plan: BatchPlan
    outcome: WindowOutcome
    mode: str
    # How long each request of the window waited before the window started, in milliseconds.
    queue_waits_ms: Sequence[float]
    # Per request of the window, in the same order: its tenant and how many texts it sent.
    tenants: Sequence[str] = ()
    request_texts: Sequence[int] = ()


class WindowObserver(Protocol):
    def window_finished(self, report: WindowReport) -> None: ...
