"""The Grafana dashboard against the server's metric definitions, without a server: every metric
it queries is defined (ServerMetrics and the scrape-time RuntimeCollector) and every label it
matches on or groups by is one of that metric's labels, so a rename cannot rot the dashboard.
(tests/integration/test_prometheus_dashboard.py runs its queries on a real Prometheus.)"""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from processors.engine_status import EngineStatus, EngineWork
from server.batching.admission import AdmissionState
from server.batching.batcher import BatcherState
from server.observability.drift import DriftReading
from server.observability.metrics import ServerMetrics
from server.observability.runtime_collector import RuntimeCollector, RuntimeProbes
from tests import grafana_dashboard as board

# Histogram buckets carry `le` on top of the metric's own labels.
BUILTIN_LABELS = {"le", "job", "instance"}


def one_of_each() -> RuntimeProbes:
    """Probes with one value of every kind, so every scrape-time family has a sample."""
    ready = EngineStatus("m", "ready", replica=0)
    reading = DriftReading("js", 0.1, False, "first_predictions", 10, 10)
    return RuntimeProbes(
        queues=lambda: {"batched": BatcherState(0, 0, 0, 0)},
        admission=lambda: AdmissionState(10, 0, 0, 0, 0),
        engines=lambda: {"m": EngineStatus("m", "ready")},
        replicas=lambda: {"m": [ready]},
        replica_work=lambda: {"m": [EngineWork()]},
        cache=lambda: {"enabled": True, "l1": {}, "l2": {}},
        drift=lambda: {"c": reading},
    )


def defined_series() -> dict[str, set[str]]:
    """Every sample name the server can expose (with _total, _bucket...) -> its label names."""
    metrics = ServerMetrics()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            labelnames = metric._labelnames
            if labelnames:  # a child, so that the family has samples to read the labels from
                metric.labels(*("x" for _ in labelnames))
    metrics.registry.register(RuntimeCollector(one_of_each()))
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_the_registry_is_read_whole():
    series = defined_series()
    # Both sources: counted as it happens, and read at scrape time.
    assert series["capserve_labels_total"] == {"capability", "label"}
    assert series["capserve_engine_replica_requests_total"] == {"engine", "replica"}
    assert series["capserve_capability_seconds_bucket"] == {"capability", "le"}


def test_every_dashboard_query_is_found():
    dashboard = board.load()
    queries = board.queries(dashboard)
    panel_queries = [q for q in queries if not q.where.startswith("variable ")]
    assert len(panel_queries) == board.count_exprs(dashboard) > 0
    assert any(q.label_values is not None for q in queries), "no template variable query"


def test_every_metric_and_label_the_dashboard_uses_is_defined():
    series = defined_series()
    queries = board.queries(board.load())
    problems = []
    checked = 0
    for query in queries:
        names = board.metric_names(query.raw)
        if not names:
            problems.append(f"{query.where}: queries no capserve metric: {query.raw}")
        unknown = sorted(names - series.keys())
        if unknown:
            problems.append(f"{query.where}: metrics not defined: {unknown}")
            continue
        labels = board.label_names(query.raw)
        if query.label_values is not None:
            labels.add(query.label_values[1])
        known = set.union(BUILTIN_LABELS, *(series[name] for name in names))
        if labels - known:
            problems.append(f"{query.where}: labels not on {sorted(names)}: {labels - known}")
        checked += 1
    assert not problems, "\n".join(problems)
    assert checked == len(queries) > 0


def test_every_variable_of_the_dashboard_has_a_value():
    dashboard = board.load()
    values = board.variable_values(dashboard, "1m")
    for query in board.queries(dashboard):
        substituted = board.substitute(query.raw, values)  # KeyError: an undefined variable
        assert "$" not in substituted and "[[" not in substituted, query.where


def test_every_range_is_the_rate_interval():
    """A fixed range (e.g. [1m]) returns nothing once the scrape interval is half as long or
    more; Grafana's $__rate_interval is always at least four scrape intervals."""
    ranges = {
        (query.where, found)
        for query in board.queries(board.load())
        for found in re.findall(r"\[([^\[\]]+)\]", query.raw)
    }
    assert ranges, "the dashboard has no range selector"
    fixed = sorted(r for r in ranges if r[1] != "$__rate_interval")
    assert not fixed, f"fixed ranges: {fixed}"
