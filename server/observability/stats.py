"""Counters and latency percentiles since start: the proof that batching saves work."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from processors.engine_status import EngineStatus, EngineWork
from server.execution.observers import WindowReport
from server.observability.tenants import TenantUsage


class LatencySamples:
    """The most recent samples (milliseconds), for percentiles."""

    def __init__(self, keep: int = 10_000) -> None:
        self._samples: deque[float] = deque(maxlen=keep)

    def add(self, value_ms: float) -> None:
        self._samples.append(value_ms)

    def extend(self, values_ms: Iterable[float]) -> None:
        self._samples.extend(values_ms)

    def percentiles(self) -> dict[str, float | None]:
        ordered = sorted(self._samples)
        if not ordered:
            return {"p50": None, "p95": None, "p99": None}

        def at(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

        return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


class WindowSizes:
    """The texts of the most recent windows, oldest first: how full the windows run."""

    def __init__(self, keep: int = 1_000, shown: int = 60) -> None:
        self._sizes: deque[int] = deque(maxlen=keep)
        self._shown = shown

    def add(self, texts: int) -> None:
        self._sizes.append(texts)

    def snapshot(self) -> dict[str, Any]:
        """`recent`: the last `shown` sizes; the rest describe every kept window."""
        sizes = list(self._sizes)
        if not sizes:
            return {"last": None, "mean": None, "p50": None, "p95": None, "max": None, "recent": []}
        ordered = sorted(sizes)

        def at(q: float) -> int:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return {
            "last": sizes[-1],
            "mean": round(sum(sizes) / len(sizes), 2),
            "p50": at(0.50),
            "p95": at(0.95),
            "max": ordered[-1],
            "recent": sizes[-self._shown :],
        }


class CacheCounters(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


@dataclass
class CapabilityCounters:
    executions: int = 0
    texts: int = 0
    engine_seconds: float = 0.0
    errors: int = 0
    # Texts a condition (or a skipped dependency) kept from running: executions saved.
    skipped: int = 0


class DriftSnapshot(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class ServerStats:
    def __init__(
        self, cache: CacheCounters | None = None, drift: DriftSnapshot | None = None
    ) -> None:
        self.cache = cache
        self.drift = drift
        self.tenants = TenantUsage()
        # Requests the result cache answered on arrival, and the (capability, unique text)
        # executions cached results spared, on arrival and inside windows.
        self.cache_answers = 0
        self.cache_saved_executions = 0
        self.started_at = time.time()
        self.requests = 0
        self.failed_requests = 0
        self.texts = 0
        self.unique_texts = 0
        self.windows = 0
        self.capability_executions = 0
        self.naive_equivalent_executions = 0
        self.condition_skips = 0
        self.capabilities: dict[str, CapabilityCounters] = {}
        self.queue_wait = LatencySamples()
        self.latency = LatencySamples()
        self.window_sizes = WindowSizes()

    def window_finished(self, report: WindowReport) -> None:
        plan, seconds = report.plan, report.outcome.seconds
        self.windows += 1
        self.texts += plan.total_texts
        self.unique_texts += len(plan.texts)
        self.window_sizes.add(plan.total_texts)
        self.capability_executions += plan.capability_executions
        self.naive_equivalent_executions += plan.naive_equivalent_executions
        for step in plan.steps:
            counters = self.capabilities.setdefault(step.capability, CapabilityCounters())
            counters.executions += 1
            counters.texts += len(step.text_ids)
            counters.engine_seconds += seconds.get(step.capability, 0.0)
        for name, skipped in report.outcome.skipped.items():
            self.capabilities.setdefault(name, CapabilityCounters()).skipped += skipped
            self.condition_skips += skipped
        for name in report.outcome.failed_capabilities():
            self.capabilities.setdefault(name, CapabilityCounters()).errors += 1
        self.queue_wait.extend(report.queue_waits_ms)
        self.cache_saved_executions += plan.text_executions_saved
        self.tenants.window_finished(report)

    def record_cache_answer(self, executions_saved: int) -> None:
        self.cache_answers += 1
        self.cache_saved_executions += executions_saved

    def record_request(
        self, latency_ms: float, ok: bool, tenant: str = "anonymous", texts: int = 0
    ) -> None:
        self.requests += 1
        if not ok:
            self.failed_requests += 1
        self.latency.add(latency_ms)
        self.tenants.request_finished(tenant, texts)

    def snapshot(self) -> dict[str, Any]:
        ratio = (
            self.naive_equivalent_executions / self.capability_executions
            if self.capability_executions
            else None
        )
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "texts": self.texts,
            "unique_texts": self.unique_texts,
            "windows": self.windows,
            # Texts per window (all requests, before deduplication), recent windows.
            "window_texts": self.window_sizes.snapshot(),
            "capability_executions": self.capability_executions,
            "naive_equivalent_executions": self.naive_equivalent_executions,
            "naive_to_actual_ratio": round(ratio, 3) if ratio else None,
            # (capability, text) executions conditions saved: skipped before any engine call.
            "executions_saved_by_conditions": self.condition_skips,
            "queue_wait_ms": self.queue_wait.percentiles(),
            "latency_ms": self.latency.percentiles(),
            "capabilities": {
                name: {
                    "executions": c.executions,
                    "texts": c.texts,
                    "avg_texts_per_execution": round(c.texts / c.executions, 2)
                    if c.executions
                    else None,
                    "engine_seconds": round(c.engine_seconds, 3),
                    "errors": c.errors,
                    "skipped_by_condition": c.skipped,
                }
                for name, c in sorted(self.capabilities.items())
            },
            "cache": self.cache_snapshot(),
            "drift": {"enabled": False} if self.drift is None else self.drift.snapshot(),
            "tenants": self.tenants.snapshot(),
        }

    def cache_snapshot(self) -> dict[str, Any]:
        if self.cache is None:
            return {"enabled": False}
        return {
            "enabled": True,
            "answered_on_arrival": self.cache_answers,
            "executions_saved": self.cache_saved_executions,
            **self.cache.snapshot(),
        }


def engine_status_section(
    states: Mapping[str, EngineStatus],
    replicas: Mapping[str, Sequence[EngineStatus]] | None = None,
    replica_work: Mapping[str, Sequence[EngineWork]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per engine: its state (up while any replica is), whether it serves, its restarts, its
    last error (a type), the dtype it computes in, and each replica's state and work."""
    section: dict[str, dict[str, Any]] = {}
    for name, status in sorted(states.items()):
        work = (replica_work or {}).get(name, ())
        section[name] = {
            "state": status.state,
            "up": status.up,
            "restarts": status.restarts,
            "last_error": status.last_error,
            "dtype": status.dtype,
            "replicas_up": status.replicas_up,
            "replicas": [
                {
                    "replica": str(replica.replica),
                    "state": replica.state,
                    "up": replica.up,
                    "restarts": replica.restarts,
                    "last_error": replica.last_error,
                    "work": vars(work[i]) if i < len(work) else None,
                }
                for i, replica in enumerate((replicas or {}).get(name, ()))
            ],
        }
    return section
