"""Metrics read at scrape time from the runtime's own state: queue depth, admission, the result
cache's counters, engines, and drift. Each comes from a probe (a function returning the current
value), so the collector knows no runtime and tests hand it plain values."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from processors.engine_status import EngineStatus, EngineWork
from server.batching.admission import AdmissionState
from server.batching.batcher import BatcherState
from server.observability.drift import DriftReading


@dataclass(frozen=True)
class RuntimeProbes:
    # Batching mode -> its batcher's state.
    queues: Callable[[], Mapping[str, BatcherState]]
    admission: Callable[[], AdmissionState]
    engines: Callable[[], Mapping[str, EngineStatus]]
    # Each model's replicas: their states, and the work sent to each (replica = list index).
    replicas: Callable[[], Mapping[str, Sequence[EngineStatus]]]
    replica_work: Callable[[], Mapping[str, Sequence[EngineWork]]]
    # The /stats `cache` section: {"enabled": False} or the counters of each level.
    cache: Callable[[], Mapping[str, Any]]
    drift: Callable[[], Mapping[str, DriftReading]]


class RuntimeCollector:
    def __init__(self, probes: RuntimeProbes) -> None:
        self.probes = probes

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield from self._admission()
        yield from self._cache()
        yield from self._engines()
        yield from self._drift()

    def _queues(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            "capserve_queue_windows_waiting", "Sealed windows waiting for a slot", labels=["mode"]
        )
        gathering = GaugeMetricFamily(
            "capserve_queue_requests_gathering", "Requests in the open window", labels=["mode"]
        )
        running = GaugeMetricFamily("capserve_windows_running", "Windows running", labels=["mode"])
        for mode, state in sorted(self.probes.queues().items()):
            waiting.add_metric([mode], state.windows_waiting)
            gathering.add_metric([mode], state.requests_gathering)
            running.add_metric([mode], state.windows_running)
        yield from (waiting, gathering, running)

    def _admission(self) -> Iterator[Metric]:
        state = self.probes.admission()
        yield GaugeMetricFamily(
            "capserve_admitted_texts",
            "Texts admitted and not yet answered",
            value=state.admitted_texts,
        )
        yield GaugeMetricFamily(
            "capserve_admitted_requests",
            "Requests admitted and not yet answered",
            value=state.admitted_requests,
        )
        yield GaugeMetricFamily(
            "capserve_admission_max_texts",
            "Most texts admitted at once (admission.max_admitted_texts)",
            value=state.max_admitted_texts,
        )
        yield CounterMetricFamily(
            "capserve_admission_accepted", "Requests admitted", value=state.accepted_total
        )
        yield CounterMetricFamily(
            "capserve_admission_rejected",
            "Requests refused at capacity (503 at_capacity)",
            value=state.rejected_total,
        )

    def _cache(self) -> Iterator[Metric]:
        cache = self.probes.cache()
        if not cache.get("enabled"):
            return
        hits = CounterMetricFamily(
            "capserve_cache_hits",
            "Result cache hits by level (l1 in process, l2 Redis)",
            labels=["level"],
        )
        misses = CounterMetricFamily(
            "capserve_cache_misses", "Result cache misses by level", labels=["level"]
        )
        for level in ("l1", "l2"):
            counters = cache.get(level, {})
            hits.add_metric([level], counters.get("hits", 0))
            misses.add_metric([level], counters.get("misses", 0))
        yield from (hits, misses)
        yield GaugeMetricFamily(
            "capserve_cache_entries",
            "Results held in the in-process cache (L1)",
            value=cache.get("l1", {}).get("entries", 0),
        )
        yield CounterMetricFamily(
            "capserve_cache_answered_on_arrival",
            "Requests the result cache answered whole, without a window",
            value=cache.get("answered_on_arrival", 0),
        )

    def _engines(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("capserve_engine_up", "1 when the engine serves", labels=["engine"])
        restarts = CounterMetricFamily(
            "capserve_engine_restarts", "Engine restarts since start", labels=["engine"]
        )
        for name, status in sorted(self.probes.engines().items()):
            up.add_metric([name], 1 if status.up else 0)
            restarts.add_metric([name], status.restarts)
        yield from (up, restarts)
        yield from self._replicas()

    def _replicas(self) -> Iterator[Metric]:
        labels = ["engine", "replica"]
        up = GaugeMetricFamily(
            "capserve_engine_replica_up", "1 when the engine replica serves", labels=labels
        )
        restarts = CounterMetricFamily(
            "capserve_engine_replica_restarts", "Engine replica restarts since start", labels=labels
        )
        requests = CounterMetricFamily(
            "capserve_engine_replica_requests",
            "Requests the engine replica answered",
            labels=labels,
        )
        tokens = CounterMetricFamily(
            "capserve_engine_replica_prompt_tokens",
            "Prompt tokens of the requests the engine replica answered",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "capserve_engine_replica_in_flight", "Requests at the engine replica now", labels=labels
        )
        work = self.probes.replica_work()
        for name, replicas in sorted(self.probes.replicas().items()):
            for status in replicas:
                label = [name, str(status.replica)]
                up.add_metric(label, 1 if status.up else 0)
                restarts.add_metric(label, status.restarts)
            for index, replica_work in enumerate(work.get(name, ())):
                label = [name, str(index)]
                requests.add_metric(label, replica_work.requests)
                tokens.add_metric(label, replica_work.prompt_tokens)
                in_flight.add_metric(label, replica_work.in_flight)
        yield from (up, restarts, requests, tokens, in_flight)

    def _drift(self) -> Iterator[Metric]:
        drift = GaugeMetricFamily(
            "capserve_drift",
            "Label drift of recent predictions against the reference (JS divergence or PSI)",
            labels=["capability"],
        )
        alert = GaugeMetricFamily(
            "capserve_drift_alert",
            "1 when the capability's drift is above observability.drift.alert_threshold",
            labels=["capability"],
        )
        for name, reading in sorted(self.probes.drift().items()):
            if reading.value is not None:
                drift.add_metric([name], reading.value)
            alert.add_metric([name], 1 if reading.alert else 0)
        yield from (drift, alert)
