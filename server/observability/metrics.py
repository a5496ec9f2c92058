"""The Prometheus metrics of one runtime, in a CollectorRegistry of their own (never the global
one: a process may build several apps). Everything here is counted as it happens; what is read
at scrape time (queues, admission, cache, engines, drift) is in runtime_collector.py.

Histograms and counters of a finished window: its size, its requests' queue waits, each
capability's time and texts, and the label counts of the results it computed.
"""

from __future__ import annotations

import collections

from prometheus_client import CollectorRegistry, Counter, Histogram

from schemas.api import ERROR_TYPES
from server.execution.observers import WindowReport
from server.observability.labels import ERROR, computed_results, counted_labels

# Sizes (texts, requests, executions) and times (seconds) on 2-cores-to-GPU scales.
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.request_seconds = Histogram(
            "capserve_request_duration_seconds",
            "HTTP request latency by route template and status code",
            ["route", "status"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "capserve_errors",
            "Error responses by their error.type (http_<status> when the body has none)",
            ["code"],
            registry=registry,
        )
        for code in ERROR_TYPES:
            self.errors.labels(code=code)  # at 0 from the start, so rate() sees the first one
        self.window_texts = Histogram(
            "capserve_window_texts",
            "Texts per window (all requests, before deduplication)",
            ["mode"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.window_unique_texts = Histogram(
            "capserve_window_unique_texts",
            "Unique texts per window",
            ["mode"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.window_requests = Histogram(
            "capserve_window_requests",
            "Requests per window",
            ["mode"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.window_executions = Histogram(
            "capserve_window_capability_executions",
            "Capability executions per window (the plan's steps)",
            ["mode"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "capserve_queue_wait_seconds",
            "How long each request waited before its window started",
            ["mode"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.capability_seconds = Histogram(
            "capserve_capability_seconds",
            "Processor time of one capability execution (one window's step)",
            ["capability"],
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )
        self.capability_texts = Histogram(
            "capserve_capability_texts",
            "Unique texts per capability execution",
            ["capability"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.labels = Counter(
            "capserve_labels",
            "Computed results by capability and label (_skipped, _error, _none, _unlabelled "
            "for results without a label)",
            ["capability", "label"],
            registry=registry,
        )

    def request_finished(self, route: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(route=route, status=str(status)).observe(seconds)

    def error_returned(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def window_finished(self, report: WindowReport) -> None:
        """The WindowObserver hook."""
        plan, mode = report.plan, report.mode
        self.window_texts.labels(mode).observe(plan.total_texts)
        self.window_unique_texts.labels(mode).observe(len(plan.texts))
        self.window_requests.labels(mode).observe(len(plan.requests))
        self.window_executions.labels(mode).observe(plan.capability_executions)
        for wait_ms in report.queue_waits_ms:
            self.queue_wait.labels(mode).observe(wait_ms / 1000)
        for step in plan.steps:
            seconds = report.outcome.seconds.get(step.capability, 0.0)
            self.capability_seconds.labels(step.capability).observe(seconds)
            self.capability_texts.labels(step.capability).observe(len(step.text_ids))
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for capability, result in computed_results(report):
            for label in (ERROR,) if result is None else counted_labels(result):
                counts[(capability, label)] += 1
        for (capability, label), count in counts.items():  # one label lookup per pair
            self.labels.labels(capability, label).inc(count)
