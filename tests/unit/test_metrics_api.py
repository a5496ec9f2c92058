"""GET /metrics and the grown GET /stats through the ASGI app, on the fake pool; and the Grafana
dashboard's queries against the exposition."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from capabilities.registry import CapabilityRegistry
from schemas.config import BatchingConfig, CapServeConfig, ModelConfig
from server.api.app import create_app
from server.runtime import Runtime
from tests.prometheus_text import Samples, families, parse_samples, value
from tests.unit.fakes import FakePool, FakeProcessor

DASHBOARD = Path(__file__).resolve().parents[2] / "configs" / "grafana" / "capserve-dashboard.json"
TEXTS = [f"metrics test text number {i}" for i in range(12)]


def make_app(registry: CapabilityRegistry, pool: FakePool, **observability: Any) -> FastAPI:
    config = CapServeConfig.model_validate(
        {
            "models": {"smollm2": ModelConfig(source="x", runner="generate").model_dump()},
            "batching": BatchingConfig(window_ms=10).model_dump(),
            "observability": {"drift": {"recent": 10, "reference_size": 10}, **observability},
        }
    )
    return create_app(Runtime(config, registry, pool))


@pytest.fixture
def client(classic_registry: CapabilityRegistry) -> Iterator[TestClient]:
    pool = FakePool(FakeProcessor(fail_texts={"a text that fails"}))
    with TestClient(make_app(classic_registry, pool), raise_server_exceptions=False) as c:
        yield c


def exposition(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_samples(response.text)


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; the series must exist."""
    assert tuple(sorted(labels.items())) in samples.get(name, {}), f"no {name}{labels}"
    return value(samples, name, **labels)


def traffic(client: TestClient) -> None:
    """Every kind of answer: fresh windows, cache answers, a failed text, client errors."""
    for start in range(0, len(TEXTS), 4):
        body = {"texts": TEXTS[start : start + 4], "capabilities": ["sentiment", "route"]}
        assert client.post("/classify", json=body).status_code == 200
    cached = {"texts": TEXTS[:2], "capabilities": ["sentiment"]}
    assert client.post("/classify", json=cached).json()["cached"] is True
    failing = {"texts": ["a text that fails"], "capabilities": ["sentiment"]}
    assert client.post("/classify", json=failing).status_code == 500
    assert (
        client.post("/classify", json={"texts": ["x"], "capabilities": ["nope"]}).status_code == 422
    )
    assert client.get("/no/such/path/42").status_code == 404


def test_metrics_count_requests_errors_windows_and_labels(client: TestClient):
    before = exposition(client)
    assert "capserve_window_texts_count" not in before  # no window yet
    traffic(client)
    samples = exposition(client)
    ok = sample(samples, "capserve_request_duration_seconds_count", route="/classify", status="200")
    assert ok == 4
    failed = sample(
        samples, "capserve_request_duration_seconds_count", route="/classify", status="500"
    )
    assert failed == 1
    # Unmatched paths are never labelled with the raw path.
    assert sample(
        samples, "capserve_request_duration_seconds_count", route="unmatched", status="404"
    )
    assert not any("/no/such" in str(labels) for per in samples.values() for labels in per)
    assert sample(samples, "capserve_errors_total", code="capability_failed") == 1
    assert sample(samples, "capserve_errors_total", code="unknown_capability") == 1
    assert sample(samples, "capserve_errors_total", code="not_found") == 1
    # Three windows of four texts, one of the failing text; the cache answered one request.
    assert sample(samples, "capserve_window_texts_count", mode="batched") == 4
    assert sample(samples, "capserve_window_texts_sum", mode="batched") == 13
    assert sample(samples, "capserve_cache_answered_on_arrival_total") == 1
    assert sample(samples, "capserve_cache_hits_total", level="l1") >= 2
    assert sample(samples, "capserve_admission_accepted_total") == 5
    assert sample(samples, "capserve_engine_up", engine="fake") == 1
    labels = {
        labels: value
        for labels, value in samples["capserve_labels_total"].items()
        if ("capability", "sentiment") in labels
    }
    assert sum(labels.values()) == 13  # twelve texts and the failing one
    assert labels[(("capability", "sentiment"), ("label", "_error"))] == 1
    # Twelve sentiment predictions: the reference (10) is full and drift has a value.
    assert 0 <= sample(samples, "capserve_drift", capability="sentiment") <= 1
    assert sample(samples, "capserve_drift_alert", capability="sentiment") in (0, 1)


def test_an_escaped_exception_is_counted_as_internal_error(client: TestClient):
    async def boom() -> None:
        raise RuntimeError("boom")

    client.app.add_api_route("/boom/{item}", boom)  # type: ignore[attr-defined]
    assert client.get("/boom/7").status_code == 500
    samples = exposition(client)
    assert sample(samples, "capserve_errors_total", code="internal_error") == 1
    assert (
        sample(
            samples, "capserve_request_duration_seconds_count", route="/boom/{item}", status="500"
        )
        == 1
    )


def test_metrics_can_be_turned_off(classic_registry: CapabilityRegistry):
    with TestClient(make_app(classic_registry, FakePool(), metrics=False)) as client:
        response = client.get("/metrics")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"


def test_stats_has_admission_drift_engines_and_tenants(client: TestClient):
    traffic(client)
    stats = client.get("/stats").json()
    assert stats["admission"] == {
        "max_admitted_texts": 512,
        "admitted_texts": 0,
        "admitted_requests": 0,
        "accepted_total": 5,
        "rejected_total": 0,
    }
    assert stats["engines"]["status"] == {
        "fake": {
            "state": "ready",
            "up": True,
            "restarts": 0,
            "last_error": None,
            "dtype": None,
            "replicas_up": 1,
            "replicas": [
                {
                    "replica": "0",
                    "state": "ready",
                    "up": True,
                    "restarts": 0,
                    "last_error": None,
                    "work": stats["engines"]["work"]["fake"],
                }
            ],
        }
    }
    sentiment = stats["drift"]["capabilities"]["sentiment"]
    assert sentiment["metric"] == "js"
    assert sentiment["reference_source"] == "first_predictions"
    assert (sentiment["reference_size"], sentiment["recent_size"]) == (10, 10)
    assert 0 <= sentiment["value"] <= 1 and isinstance(sentiment["alert"], bool)
    # Without auth every request is the anonymous tenant's; the 422 was refused before.
    tenant = stats["tenants"]["anonymous"]
    assert (tenant["requests"], tenant["texts"]) == (5, 15)
    assert tenant["engine_seconds"] >= 0
    assert stats["cache"]["enabled"] is True


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    queries += [
        variable["definition"]
        for variable in board["templating"]["list"]
        if variable["type"] == "query"
    ]
    return queries


def test_the_dashboard_is_a_grafana_model_on_a_prometheus_variable():
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
    assert board["uid"] == "capserve" and board["schemaVersion"] >= 30


def test_every_dashboard_metric_is_exposed_and_every_family_is_on_the_dashboard(
    client: TestClient,
):
    traffic(client)
    exposed = set(exposition(client))
    queried = {name for query in dashboard_queries() for name in re.findall(r"capserve_\w+", query)}
    assert queried, "the dashboard queries no capserve metric"
    assert queried <= exposed, f"not exposed: {sorted(queried - exposed)}"
    exposed_families = {
        name for name in families(client.get("/metrics").text) if name.startswith("capserve_")
    }
    missing = {f for f in exposed_families if not any(name.startswith(f) for name in queried)}
    assert not missing, f"families without a panel: {sorted(missing)}"
