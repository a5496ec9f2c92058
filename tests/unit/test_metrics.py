"""The Prometheus metrics, without HTTP: the window observer fed hand-built WindowReports, the
scrape-time collector fed plain values, and the request middleware's pieces."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from processors.engine_status import EngineStatus, EngineWork
from server.batching.admission import AdmissionState
from server.batching.batcher import BatcherState
from server.observability.drift import DriftReading
from server.observability.http_metrics import UNMATCHED, error_code, route_template
from server.observability.metrics import ServerMetrics
from server.observability.runtime_collector import RuntimeCollector, RuntimeProbes
from server.observability.tenants import TenantUsage
from tests.unit.window_reports import (
    errored,
    labelled,
    multilabel,
    scored,
    skipped,
    window_report,
)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels)
    assert sample is not None, f"no sample {name}{labels}"
    return sample


def test_a_window_feeds_size_wait_capability_and_label_metrics():
    metrics = ServerMetrics()
    report = window_report(
        {
            "sentiment": [labelled("sentiment", "pos"), labelled("sentiment", "pos"), None],
            "pii": [multilabel("pii", "email", "phone"), multilabel("pii"), skipped("pii")],
            "toxicity": [scored("toxicity", 0.3), errored("toxicity")],
        },
        seconds={"sentiment": 0.5, "pii": 0.25, "toxicity": 2.0},
        tenants=("a", "b"),
        request_texts=(2, 1),
        queue_waits_ms=(30.0, 120.0),
    )
    metrics.window_finished(report)
    registry = metrics.registry
    assert value(registry, "capserve_window_texts_sum", mode="batched") == 3
    assert value(registry, "capserve_window_unique_texts_sum", mode="batched") == 3
    assert value(registry, "capserve_window_requests_sum", mode="batched") == 2
    assert value(registry, "capserve_window_capability_executions_sum", mode="batched") == 3
    assert value(registry, "capserve_queue_wait_seconds_count", mode="batched") == 2
    assert value(registry, "capserve_queue_wait_seconds_sum", mode="batched") == pytest.approx(0.15)
    # 120 ms is above the 0.1 s bucket, 30 ms below it.
    assert value(registry, "capserve_queue_wait_seconds_bucket", mode="batched", le="0.1") == 1
    assert value(registry, "capserve_capability_seconds_sum", capability="toxicity") == 2.0
    assert value(registry, "capserve_capability_seconds_count", capability="pii") == 1
    assert value(registry, "capserve_capability_texts_sum", capability="sentiment") == 3
    assert value(registry, "capserve_capability_texts_sum", capability="toxicity") == 2
    expected_labels = {
        ("sentiment", "pos"): 2,
        ("sentiment", "_error"): 1,  # the failed text
        ("pii", "email"): 1,
        ("pii", "phone"): 1,
        ("pii", "_none"): 1,
        ("pii", "_skipped"): 1,
        ("toxicity", "_unlabelled"): 1,
        ("toxicity", "_error"): 1,
    }
    for (capability, label), count in expected_labels.items():
        assert value(registry, "capserve_labels_total", capability=capability, label=label) == count
    metrics.window_finished(report)
    assert value(registry, "capserve_labels_total", capability="sentiment", label="pos") == 4


def test_request_and_error_counters():
    metrics = ServerMetrics()
    metrics.request_finished("/classify", 200, 0.2)
    metrics.request_finished("/classify", 503, 0.01)
    metrics.error_returned("at_capacity")
    registry = metrics.registry
    assert (
        value(registry, "capserve_request_duration_seconds_count", route="/classify", status="503")
        == 1
    )
    assert value(
        registry, "capserve_request_duration_seconds_sum", route="/classify", status="200"
    ) == pytest.approx(0.2)
    assert value(registry, "capserve_errors_total", code="at_capacity") == 1


def test_each_runtime_has_its_own_registry():
    first, second = ServerMetrics(), ServerMetrics()
    first.error_returned("timeout")
    assert first.registry.get_sample_value("capserve_errors_total", {"code": "timeout"}) == 1
    assert second.registry.get_sample_value("capserve_errors_total", {"code": "timeout"}) == 0


def probes(cache: dict[str, Any]) -> RuntimeProbes:
    return RuntimeProbes(
        queues=lambda: {
            "batched": BatcherState(
                windows_running=2, windows_waiting=3, requests_gathering=4, windows_dispatched=9
            )
        },
        admission=lambda: AdmissionState(512, 40, 5, 100, 7),
        engines=lambda: {
            "smollm2": EngineStatus("smollm2", "ready", restarts=2),
            "minilm": EngineStatus("minilm", "restarting", restarts=1, last_error="EngineDead"),
        },
        replicas=lambda: {
            "minilm": [
                EngineStatus("minilm", "restarting", restarts=1, replica=0),
                EngineStatus("minilm", "ready", replica=1),
            ]
        },
        replica_work=lambda: {
            "minilm": [EngineWork(requests=3, prompt_tokens=30), EngineWork(7, 70, 0, 0, 2)]
        },
        cache=lambda: cache,
        drift=lambda: {
            "sentiment": DriftReading("js", 0.25, True, "first_predictions", 500, 500),
            "topic": DriftReading("js", None, False, "first_predictions", 12, 12),
        },
    )


CACHE = {
    "enabled": True,
    "answered_on_arrival": 6,
    "l1": {"hits": 10, "misses": 5, "entries": 42},
    "l2": {"hits": 3, "misses": 2, "skipped": 0, "state": "up"},
}


def test_the_collector_reads_runtime_state_at_scrape_time():
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(probes(CACHE)))
    expected = {
        ("capserve_queue_windows_waiting", ("mode", "batched")): 3,
        ("capserve_queue_requests_gathering", ("mode", "batched")): 4,
        ("capserve_windows_running", ("mode", "batched")): 2,
        ("capserve_admitted_texts", None): 40,
        ("capserve_admitted_requests", None): 5,
        ("capserve_admission_max_texts", None): 512,
        ("capserve_admission_accepted_total", None): 100,
        ("capserve_admission_rejected_total", None): 7,
        ("capserve_cache_hits_total", ("level", "l1")): 10,
        ("capserve_cache_misses_total", ("level", "l1")): 5,
        ("capserve_cache_hits_total", ("level", "l2")): 3,
        ("capserve_cache_misses_total", ("level", "l2")): 2,
        ("capserve_cache_entries", None): 42,
        ("capserve_cache_answered_on_arrival_total", None): 6,
        ("capserve_engine_up", ("engine", "smollm2")): 1,
        ("capserve_engine_up", ("engine", "minilm")): 0,
        ("capserve_engine_restarts_total", ("engine", "smollm2")): 2,
        ("capserve_engine_restarts_total", ("engine", "minilm")): 1,
        ("capserve_drift", ("capability", "sentiment")): 0.25,
        ("capserve_drift_alert", ("capability", "sentiment")): 1,
        ("capserve_drift_alert", ("capability", "topic")): 0,
    }
    for (name, label), expected_value in expected.items():
        labels = {} if label is None else {label[0]: label[1]}
        assert value(registry, name, **labels) == expected_value, name
    replica = {"engine": "minilm", "replica": "1"}
    assert registry.get_sample_value("capserve_engine_replica_up", replica) == 1
    assert registry.get_sample_value("capserve_engine_replica_requests_total", replica) == 7
    assert registry.get_sample_value("capserve_engine_replica_prompt_tokens_total", replica) == 70
    assert registry.get_sample_value("capserve_engine_replica_in_flight", replica) == 2
    first = {"engine": "minilm", "replica": "0"}
    assert registry.get_sample_value("capserve_engine_replica_up", first) == 0
    assert registry.get_sample_value("capserve_engine_replica_restarts_total", first) == 1
    # No drift value until there is one to compare.
    assert registry.get_sample_value("capserve_drift", {"capability": "topic"}) is None


def test_no_cache_metrics_when_the_cache_is_off():
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(probes({"enabled": False})))
    assert registry.get_sample_value("capserve_cache_hits_total", {"level": "l1"}) is None
    assert registry.get_sample_value("capserve_admitted_texts") == 40


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (503, b'{"error": {"type": "at_capacity", "message": "m", "details": []}}', "at_capacity"),
        (429, b'{"error": "Rate limit exceeded: 1 per 1 minute"}', "http_429"),
        (502, b"<html>bad gateway</html>", "http_502"),
        (404, b"", "http_404"),
        (400, b"[1, 2]", "http_400"),
    ],
)
def test_error_code_reads_the_envelope_or_falls_back_to_the_status(
    status: int, body: bytes, code: str
):
    assert error_code(status, body) == code


def test_route_template_never_uses_the_raw_path():
    class Route:
        path = "/admin/capabilities/{name}"

    assert route_template({"route": Route(), "path": "/admin/capabilities/x"}) == Route.path
    assert route_template({"path": "/no/such/thing"}) == UNMATCHED


def test_tenant_engine_time_is_shared_by_texts():
    usage = TenantUsage()
    report = window_report(
        {"sentiment": [labelled("sentiment", "pos")] * 4},
        seconds={"sentiment": 3.0, "pii": 1.0},
        tenants=("alice", "bob"),
        request_texts=(3, 1),
        queue_waits_ms=(1.0, 1.0),
    )
    usage.window_finished(report)
    usage.request_finished("alice", 3)
    usage.request_finished("bob", 1)
    usage.request_finished("bob", 2)  # answered by the cache: no window, no engine time
    assert usage.snapshot() == {
        "alice": {"requests": 1, "texts": 3, "engine_seconds": 3.0},
        "bob": {"requests": 2, "texts": 3, "engine_seconds": 1.0},
    }


def test_every_error_type_is_counted_from_zero_before_its_first_error():
    from schemas.api import ERROR_TYPES

    metrics = ServerMetrics()
    for code in ERROR_TYPES:
        assert value(metrics.registry, "capserve_errors_total", code=code) == 0.0
    metrics.error_returned("timeout")
    assert value(metrics.registry, "capserve_errors_total", code="timeout") == 1.0


def test_the_error_types_counted_from_zero_are_every_one_the_server_answers_with():
    """Every string literal given as the kind of an `error_response` call in server/, and the
    kinds chosen by name in the HTTP-exception and serving-gate handlers."""
    import ast
    from pathlib import Path

    from schemas.api import ERROR_TYPES

    root = Path(__file__).resolve().parents[2] / "server"
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "error_response"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                found.add(node.args[1].value)
    assert len(found) >= 14  # the walk did find the calls
    chosen = {"not_found", "method_not_allowed", "http_error", "starting", "shutting_down"}
    assert found | chosen == set(ERROR_TYPES)
