from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from capabilities.registry import CapabilityRegistry
from processors.overflow import TEXT_TOO_LONG
from schemas.config import BatchingConfig, CapServeConfig, LimitsConfig, ModelConfig
from server.api.app import create_app
from server.runtime import Runtime
from tests.unit.fakes import FakePool, FakeProcessor


def make_client(registry: CapabilityRegistry, pool: FakePool, **batching: Any) -> TestClient:
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(window_ms=10, **batching),
        limits=LimitsConfig(max_texts_per_request=3, max_text_chars=50),
    )
    return TestClient(create_app(Runtime(config, registry, pool)))


@pytest.fixture
def client(classic_registry: CapabilityRegistry) -> Iterator[TestClient]:
    with make_client(classic_registry, FakePool()) as c:
        yield c


def error_of(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_classify_returns_one_result_per_text_and_capability(client: TestClient):
    response = client.post("/classify", json={"texts": ["a", "b"], "capabilities": ["sentiment"]})
    assert response.status_code == 200
    body = response.json()
    assert [r["index"] for r in body["results"]] == [0, 1]
    result = body["results"][0]["results"]["sentiment"]
    assert result["label"] in {"positive", "negative", "neutral"}
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["version"] and body["request_id"] and body["latency_ms"] >= 0
    assert body["window"]["requests"] == 1


def test_classify_single(client: TestClient):
    response = client.post(
        "/classify/single",
        json={"text": "hi", "capabilities": ["route"], "include_dependencies": True},
    )
    assert response.status_code == 200
    assert set(response.json()["results"]) == {"task_type", "complexity", "route"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"texts": [], "capabilities": ["sentiment"]}, "texts", "at least 1 item"),
        ({"capabilities": ["sentiment"]}, "texts", "Field required"),
        ({"texts": ["a"], "capabilities": []}, "capabilities", "at least 1 item"),
        ({"texts": [3], "capabilities": ["sentiment"]}, "texts[0]", "valid string"),
        ({"texts": ["a"], "capabilities": ["sentiment"], "extra": 1}, "extra", "not permitted"),
        ({"texts": ["a", " "], "capabilities": ["sentiment"]}, "texts[1]", "is empty"),
        ({"texts": ["a", "x" * 51], "capabilities": ["sentiment"]}, "texts[1]", "at most 50"),
        ({"texts": ["a"] * 4, "capabilities": ["sentiment"]}, "texts", "at most 3 per request"),
    ],
)
def test_validation_errors_are_422_and_name_the_field(
    client: TestClient, body: dict[str, Any], field: str, message: str
):
    response = client.post("/classify", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["type"] == "validation_error"
    assert error["details"][0]["field"] == field
    assert message in error["message"]


def test_invalid_unicode_is_a_422_not_an_engine_failure(client: TestClient):
    body = b'{"texts": ["fine", "bad \\ud800"], "capabilities": ["sentiment"]}'
    response = client.post("/classify", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["details"][0]["field"] == "texts[1]" and "lone surrogate" in error["message"]


def test_single_text_errors_name_the_text_field(client: TestClient):
    response = client.post("/classify/single", json={"text": "  ", "capabilities": ["topic"]})
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "text"


def test_unknown_capability_is_422_listing_the_valid_ones(client: TestClient):
    response = client.post("/classify", json={"texts": ["a"], "capabilities": ["sentiment", "zz"]})
    assert response.status_code == 422
    error = error_of(response)
    assert error["type"] == "unknown_capability"
    assert "'zz'" in error["message"]
    for name in ("complexity", "escalation", "route", "sentiment", "task_type", "topic"):
        assert name in error["message"]


def test_malformed_json_is_a_clear_422(client: TestClient):
    response = client.post(
        "/classify", content=b'{"texts": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert error_of(response)["message"] == "body: request body is not valid JSON"


@pytest.mark.parametrize(
    "texts",
    [
        [{"note": "my password is hunter2"}],  # pydantic keeps the bad input in its error
        ["my password is hunter2 " + "x" * 60],  # too long
        ["fine", "my password is hunter2\ud800"],  # invalid Unicode
    ],
)
def test_error_messages_never_echo_the_text(client: TestClient, texts: list[object]):
    body = json.dumps({"texts": texts, "capabilities": ["sentiment"]}).encode()
    response = client.post("/classify", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "hunter2" not in response.text


def test_a_capability_failing_on_every_text_is_an_explicit_500_without_the_text(
    classic_registry: CapabilityRegistry,
):
    pool = FakePool()
    with make_client(classic_registry, pool) as c:
        pool.processor.fail_on.add("sentiment")  # after the warm-up
        response = c.post("/classify", json={"texts": ["a"], "capabilities": ["escalation"]})
    assert response.status_code == 500
    error = error_of(response)
    assert error["type"] == "capability_failed"
    assert error["message"] == "capability 'sentiment' failed on texts[0]: RuntimeError"
    assert "SECRET" not in response.text


def test_a_failing_text_gets_an_error_entry_and_the_others_keep_their_results(
    classic_registry: CapabilityRegistry,
):
    pool = FakePool()
    with make_client(classic_registry, pool) as c:
        pool.processor.fail_texts.add("doomed")
        response = c.post(
            "/classify",
            json={"texts": ["fine", "doomed", "also fine"], "capabilities": ["topic", "route"]},
        )
    assert response.status_code == 200
    body = response.json()
    assert body["failed_texts"] == 1 and body["partial"] is False
    fine, doomed, also_fine = body["results"]
    assert set(fine["results"]) == {"topic", "route"} and fine["error"] is None
    assert fine["missing"] == [] and set(also_fine["results"]) == {"topic", "route"}
    assert doomed["index"] == 1 and doomed["results"] == {}
    # The first failure in execution order (route's chain starts at task_type).
    assert doomed["error"] == {
        "type": "capability_failed",
        "capability": "task_type",
        "message": "capability 'task_type' failed: RuntimeError",
    }
    assert doomed["missing"] == ["topic", "route"]
    assert "doomed" not in response.text


def test_a_text_refused_as_too_long_is_a_text_too_long_entry(
    classic_registry: CapabilityRegistry,
):
    pool = FakePool(FakeProcessor(fail_texts={"long"}, fail_reason=TEXT_TOO_LONG))
    with make_client(classic_registry, pool) as c:
        mixed = c.post("/classify", json={"texts": ["ok", "long"], "capabilities": ["topic"]})
        alone = c.post("/classify", json={"texts": ["long"], "capabilities": ["topic"]})
    assert mixed.status_code == 200
    error = mixed.json()["results"][1]["error"]
    assert error["type"] == "text_too_long" and error["capability"] == "topic"
    assert alone.status_code == 422  # every text refused: never a 500
    assert error_of(alone)["details"][0]["field"] == "texts[0]"
    assert "longer than the context" in error_of(alone)["message"]


def test_an_engine_down_is_a_503_with_retry_after(classic_registry: CapabilityRegistry):
    pool = FakePool(FakeProcessor(fail_texts={"b"}, fail_reason="EngineUnavailableError"))
    with make_client(classic_registry, pool) as c:
        response = c.post("/classify", json={"texts": ["a", "b"], "capabilities": ["topic"]})
    assert response.status_code == 503
    assert error_of(response)["type"] == "engine_unavailable"
    assert response.headers["Retry-After"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"timeout_ms": 10**9}, "timeout_ms"),
    ],
)
def test_bad_priority_or_deadline_is_a_422(client: TestClient, extra: dict[str, Any], field: str):
    body = {"texts": ["a"], "capabilities": ["topic"], **extra}
    response = client.post("/classify", json=body)
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == field


def test_priority_and_deadline_are_accepted_on_both_endpoints(client: TestClient):
    body = {"capabilities": ["topic"], "priority": "high", "timeout_ms": 60_000}
    assert client.post("/classify", json={"texts": ["a"], **body}).status_code == 200
    single = client.post("/classify/single", json={"text": "a", **body})
    assert single.status_code == 200
    assert single.json()["partial"] is False and single.json()["missing"] == []


def test_a_failed_text_on_the_single_endpoint_is_called_text(classic_registry: CapabilityRegistry):
    pool = FakePool()
    with make_client(classic_registry, pool) as c:
        pool.processor.fail_texts.add("doomed")
        response = c.post("/classify/single", json={"text": "doomed", "capabilities": ["topic"]})
    assert response.status_code == 500
    assert error_of(response)["message"] == "capability 'topic' failed on text: RuntimeError"


def test_mode_header_is_refused_unless_enabled(client: TestClient):
    response = client.post(
        "/classify",
        json={"texts": ["a"], "capabilities": ["sentiment"]},
        headers={"X-Capserve-Batching": "naive"},
    )
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "X-Capserve-Batching"


def test_mode_header_selects_naive_when_enabled(classic_registry: CapabilityRegistry):
    with make_client(classic_registry, FakePool(), allow_mode_header=True) as c:
        response = c.post(
            "/classify",
            json={"texts": ["a"], "capabilities": ["sentiment"]},
            headers={"X-Capserve-Batching": "naive"},
        )
        assert response.json()["window"]["mode"] == "naive"
        bad = c.post(
            "/classify",
            json={"texts": ["a"], "capabilities": ["sentiment"]},
            headers={"X-Capserve-Batching": "fast"},
        )
        assert bad.status_code == 422


def test_capabilities_health_and_stats(client: TestClient):
    caps = client.get("/capabilities").json()["capabilities"]
    route = next(c for c in caps if c["name"] == "route")
    assert route["depends_on"] == ["task_type", "complexity"] and route["kind"] == "rule"
    fake = {"state": "ready", "restarts": 0, "last_error": None}
    assert client.get("/health").json() == {"status": "ok", "engines": {"fake": fake}}
    client.post("/classify", json={"texts": ["a", "a"], "capabilities": ["sentiment"]})
    stats = client.get("/stats").json()
    assert stats["requests"] == 1 and stats["texts"] == 2 and stats["unique_texts"] == 1
    assert stats["batching"]["mode"] == "batched"
    assert stats["batching"]["adaptive"] is True
    assert stats["batching"]["state"]["batched"] == {
        "windows_running": 0,
        "windows_waiting": 0,
        "requests_gathering": 0,
        "windows_dispatched": 1,
        "windows_released": 0,
    }
    assert stats["batching"]["state"]["naive"]["windows_dispatched"] == 0
    assert stats["engines"]["constructions"] == 0


def test_lifespan_starts_warms_up_and_stops_the_pool(classic_registry: CapabilityRegistry):
    pool = FakePool()
    with make_client(classic_registry, pool) as c:
        assert pool.started == 1 and pool.stopped == 0
        warmed = {call.capability for call in pool.processor.calls}
        assert warmed == {
            "sentiment",
            "topic",
            "task_type",
            "complexity",
            "safety",
            "reasoning",
            "creativity",
        }
        assert c.get("/stats").json()["requests"] == 0  # the warm-up is not traffic
    assert pool.stopped == 1


def test_a_failing_warm_up_stops_the_start(classic_registry: CapabilityRegistry):
    pool = FakePool(FakeProcessor(fail_on={"topic"}))
    client = make_client(classic_registry, pool)
    with pytest.raises(RuntimeError, match="warm-up failed: capability 'topic' failed"):
        client.__enter__()
    assert pool.stopped == 1  # the engines that started are stopped again


def test_other_http_errors_use_the_error_envelope(client: TestClient):
    missing = client.get("/nope")
    assert missing.status_code == 404 and error_of(missing)["type"] == "not_found"
    wrong = client.get("/classify")
    assert wrong.status_code == 405 and error_of(wrong)["type"] == "method_not_allowed"
    bad_bytes = client.post(
        "/classify", content=b'{"texts": ["\xff"]}', headers={"content-type": "application/json"}
    )
    assert bad_bytes.status_code in (400, 422) and "error" in bad_bytes.json()
