"""GET /metrics and GET /stats on the session server (real engines): after a few requests every
metric family is exposed and the counters moved; /stats has the observability sections."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.log_canary import canary_text
from tests.prometheus_text import Samples, families, parse_samples, total, value

CAPABILITIES = ["sentiment", "pii", "t_safety"]
FAMILIES = {
    "capserve_request_duration_seconds",
    "capserve_errors",
    "capserve_window_texts",
    "capserve_window_unique_texts",
    "capserve_window_requests",
    "capserve_window_capability_executions",
    "capserve_queue_wait_seconds",
    "capserve_capability_seconds",
    "capserve_capability_texts",
    "capserve_labels",
    "capserve_queue_windows_waiting",
    "capserve_queue_requests_gathering",
    "capserve_windows_running",
    "capserve_admitted_texts",
    "capserve_admitted_requests",
    "capserve_admission_max_texts",
    "capserve_admission_accepted",
    "capserve_admission_rejected",
    "capserve_cache_hits",
    "capserve_cache_misses",
    "capserve_cache_entries",
    "capserve_cache_answered_on_arrival",
    "capserve_engine_up",
    "capserve_engine_restarts",
    "capserve_drift",
    "capserve_drift_alert",
}


def scrape(client: httpx.Client) -> tuple[str, Samples]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, parse_samples(response.text)


def classify(client: httpx.Client, texts: list[str]) -> dict[str, Any]:
    response = client.post("/classify", json={"texts": texts, "capabilities": CAPABILITIES})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def traffic(server: Any) -> dict[str, Any]:
    """Scrapes before and after: one fresh request of three texts (one with an email), the same
    request again (answered by the cache), and one unknown capability (422)."""
    run = uuid.uuid4().hex[:8]
    texts = [
        canary_text(f"metrics {run}: thanks, the delivery was quick and friendly"),
        canary_text(f"metrics {run}: write to me at jane.doe@example.com about the refund"),
        canary_text(f"metrics {run}: how do I reset my password?"),
    ]
    with httpx.Client(base_url=server.url, timeout=300) as client:
        _, before = scrape(client)
        stats_before = client.get("/stats").json()
        first = classify(client, texts)
        second = classify(client, texts)
        unknown = client.post("/classify", json={"texts": texts[:1], "capabilities": ["nope"]})
        text, after = scrape(client)
        stats_after = client.get("/stats").json()
    return {
        "first": first,
        "second": second,
        "unknown": unknown.status_code,
        "before": before,
        "after": after,
        "text": text,
        "stats_before": stats_before,
        "stats_after": stats_after,
    }


def moved(traffic: dict[str, Any], name: str, **labels: str) -> float:
    return total(traffic["after"], name, **labels) - total(traffic["before"], name, **labels)


def test_every_family_is_exposed(traffic: dict[str, Any]):
    assert traffic["first"]["window"] is not None and traffic["second"]["cached"] is True
    assert traffic["unknown"] == 422
    missing = FAMILIES - families(traffic["text"])
    assert not missing, f"families not exposed: {sorted(missing)}"


def test_request_and_error_counters_moved(traffic: dict[str, Any]):
    ok = moved(traffic, "capserve_request_duration_seconds_count", route="/classify", status="200")
    assert ok == 2
    refused = moved(
        traffic, "capserve_request_duration_seconds_count", route="/classify", status="422"
    )
    assert refused == 1
    assert moved(traffic, "capserve_errors_total", code="unknown_capability") == 1
    assert moved(traffic, "capserve_admission_accepted_total") == 2


def test_window_capability_and_label_metrics_moved(traffic: dict[str, Any]):
    assert moved(traffic, "capserve_window_texts_count") >= 1
    assert moved(traffic, "capserve_window_texts_sum") >= 3
    assert moved(traffic, "capserve_queue_wait_seconds_count") >= 1
    for capability in CAPABILITIES:
        assert moved(traffic, "capserve_capability_texts_sum", capability=capability) == 3
        assert moved(traffic, "capserve_capability_seconds_count", capability=capability) >= 1
        # Each of the three texts counts at least once (multilabel results once per label).
        assert moved(traffic, "capserve_labels_total", capability=capability) >= 3
    # The text with an email address is counted under pii's email label.
    assert moved(traffic, "capserve_labels_total", capability="pii", label="email") == 1
    # The engines did work for sentiment (MiniLM) and t_safety (SmolLM2).
    assert moved(traffic, "capserve_capability_seconds_sum", capability="t_safety") > 0


def test_cache_engine_and_admission_gauges(traffic: dict[str, Any]):
    after = traffic["after"]
    assert moved(traffic, "capserve_cache_answered_on_arrival_total") == 1
    assert moved(traffic, "capserve_cache_hits_total") >= len(CAPABILITIES) * 3
    assert value(after, "capserve_cache_entries") >= 9
    engines = after["capserve_engine_up"]
    assert {dict(labels)["engine"] for labels in engines} >= {"smollm2", "minilm"}
    assert all(up == 1 for up in engines.values())
    assert set(after["capserve_engine_restarts_total"]) == set(engines)
    assert value(after, "capserve_admitted_texts") == 0  # nothing in progress
    assert value(after, "capserve_admission_max_texts") >= 1
    assert value(after, "capserve_queue_windows_waiting", mode="batched") == 0
    # The sentiment predictions are watched for drift (the default reference is the first 500).
    assert ("capability", "sentiment") in {
        label for labels in after["capserve_drift_alert"] for label in labels
    }


def test_stats_has_the_observability_sections(traffic: dict[str, Any]):
    before, after = traffic["stats_before"], traffic["stats_after"]
    assert set(after["admission"]) == {
        "max_admitted_texts",
        "admitted_texts",
        "admitted_requests",
        "accepted_total",
        "rejected_total",
    }
    assert after["admission"]["accepted_total"] - before["admission"]["accepted_total"] == 2
    status = after["engines"]["status"]
    assert {"smollm2", "minilm"} <= set(status)
    for engine in status.values():
        assert engine["state"] == "ready" and engine["up"] is True
        assert isinstance(engine["restarts"], int)
    drift = after["drift"]
    assert drift["enabled"] is True and drift["metric"] in {"js", "psi"}
    sentiment = drift["capabilities"]["sentiment"]
    assert sentiment["reference_source"] == "first_predictions"
    recent_before = before["drift"]["capabilities"].get("sentiment", {}).get("recent_size", 0)
    assert sentiment["recent_size"] == min(recent_before + 3, drift["recent"])
    tenant, tenant_before = after["tenants"]["anonymous"], before["tenants"].get("anonymous", {})
    assert tenant["requests"] - tenant_before.get("requests", 0) == 2
    assert tenant["texts"] - tenant_before.get("texts", 0) == 6
    assert tenant["engine_seconds"] > tenant_before.get("engine_seconds", 0)
    assert after["cache"]["enabled"] is True
