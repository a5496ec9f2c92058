"""Authentication, permissions, rate limits, the body limit and the access log through HTTP
(the app with a fake pool)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from capabilities.registry import CapabilityRegistry
from schemas.config import CapServeConfig, RateLimitConfig
from server.api.app import create_app
from server.runtime import Runtime
from tests.unit.auth_fixtures import ADMIN_KEY, ENV, USER_KEY, config, hs256_token, secured_config
from tests.unit.fakes import FakePool

CLASSIFY = {"texts": ["a fine day"], "capabilities": ["sentiment"]}


def app_client(
    registry: CapabilityRegistry, cfg: CapServeConfig, monkeypatch: pytest.MonkeyPatch
) -> TestClient:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return TestClient(create_app(Runtime(cfg, registry, FakePool())))


def serve(
    registry: CapabilityRegistry, cfg: CapServeConfig, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    with app_client(registry, cfg, monkeypatch) as client:
        yield client


@pytest.fixture
def secured(
    classic_registry: CapabilityRegistry, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    yield from serve(classic_registry, secured_config(), monkeypatch)


@pytest.fixture
def open_client(
    classic_registry: CapabilityRegistry, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    yield from serve(classic_registry, config(), monkeypatch)


def error_type(response: Any) -> str:
    kind: str = response.json()["error"]["type"]
    return kind


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "no"}])
def test_without_or_with_bad_credentials_401(secured: TestClient, headers: dict[str, str]):
    for method, path in [("post", "/classify"), ("get", "/capabilities"), ("get", "/stats")]:
        response = secured.request(method, path, json=CLASSIFY, headers=headers)
        assert response.status_code == 401, path
        assert error_type(response) == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "nope" not in response.text


def test_health_and_metrics_paths_need_no_credentials(secured: TestClient):
    assert secured.get("/health").status_code == 200
    # /metrics is open to the auth layer: whatever answers there, it is not a 401.
    assert secured.get("/metrics").status_code != 401
    assert secured.get("/health", headers={"Authorization": "Bearer bad"}).status_code == 200


def test_protected_metrics_need_credentials(
    classic_registry: CapabilityRegistry, monkeypatch: pytest.MonkeyPatch
):
    cfg = secured_config()
    cfg.auth.protect_metrics = True
    with app_client(classic_registry, cfg, monkeypatch) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": USER_KEY}).status_code != 401


@pytest.mark.parametrize(
    "headers",
    [
        lambda: {"Authorization": f"Bearer {USER_KEY}"},
        lambda: {"X-API-Key": USER_KEY},
        # Minted when the test runs: a token made at collection may expire before it runs.
        lambda: {"Authorization": f"Bearer {hs256_token({'sub': 'svc'})}"},
    ],
    ids=["bearer-key", "x-api-key", "bearer-jwt"],
)
def test_valid_credentials_classify(secured: TestClient, headers: Callable[[], dict[str, str]]):
    response = secured.post("/classify", json=CLASSIFY, headers=headers())
    assert response.status_code == 200, response.text
    assert "sentiment" in response.json()["results"][0]["results"]


def test_the_tenant_reaches_the_runtime(secured: TestClient, monkeypatch: pytest.MonkeyPatch):
    runtime: Runtime = secured.app.state.runtime  # type: ignore[attr-defined]
    tenants: list[str] = []
    classify = runtime.classify

    async def recording(*args: Any, **kwargs: Any) -> Any:
        tenants.append(kwargs["tenant"])
        return await classify(*args, **kwargs)

    monkeypatch.setattr(runtime, "classify", recording)
    token = hs256_token({"sub": "svc-7"})
    secured.post("/classify", json=CLASSIFY, headers={"X-API-Key": USER_KEY})
    secured.post("/classify", json=CLASSIFY, headers={"Authorization": f"Bearer {token}"})
    assert tenants == ["tenant-a", "svc-7"]


def test_a_capability_the_key_may_not_use_is_403(secured: TestClient):
    body = {"texts": ["x"], "capabilities": ["sentiment", "route"]}
    response = secured.post("/classify", json=body, headers={"X-API-Key": USER_KEY})
    assert response.status_code == 403
    assert error_type(response) == "forbidden"
    assert "'route'" in response.json()["error"]["message"]
    single = {"text": "x", "capabilities": ["topic"]}
    assert (
        secured.post("/classify/single", json=single, headers={"X-API-Key": USER_KEY}).status_code
        == 403
    )


def test_dependencies_returned_must_be_allowed_too(secured: TestClient):
    token = hs256_token({"sub": "svc", "capabilities": ["route"]})
    headers = {"Authorization": f"Bearer {token}"}
    body = {"texts": ["x"], "capabilities": ["route"]}
    assert secured.post("/classify", json=body, headers=headers).status_code == 200
    with_deps = {**body, "include_dependencies": True}
    response = secured.post("/classify", json=with_deps, headers=headers)
    assert response.status_code == 403
    assert "dependencies" in response.json()["error"]["message"]


def test_admin_needs_an_admin_caller(secured: TestClient):
    response = secured.post("/admin/reload?dry_run=true", headers={"X-API-Key": USER_KEY})
    assert response.status_code == 403
    assert error_type(response) == "forbidden"
    admin = secured.post("/admin/reload?dry_run=true", headers={"X-API-Key": ADMIN_KEY})
    assert admin.status_code != 403 and admin.status_code != 401
    token = hs256_token({"sub": "root", "admin": True})
    by_token = secured.post(
        "/admin/reload?dry_run=true", headers={"Authorization": f"Bearer {token}"}
    )
    assert by_token.status_code not in (401, 403)


def test_auth_off_everything_is_open(open_client: TestClient):
    assert open_client.post("/classify", json=CLASSIFY).status_code == 200
    assert open_client.post("/admin/reload?dry_run=true").status_code not in (401, 403)


def test_over_the_key_rate_limit_429_with_retry_after(secured: TestClient):
    headers = {"X-API-Key": ADMIN_KEY}  # its own limit: 3/minute
    statuses = [secured.get("/capabilities", headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = secured.get("/capabilities", headers=headers)
    assert limited.status_code == 429 and error_type(limited) == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Other callers and the health paths are not affected.
    assert secured.get("/capabilities", headers={"X-API-Key": USER_KEY}).status_code == 200
    assert secured.get("/health", headers=headers).status_code == 200


def test_anonymous_callers_are_limited_per_address_when_configured(
    classic_registry: CapabilityRegistry, monkeypatch: pytest.MonkeyPatch
):
    cfg = config(rate_limits=RateLimitConfig(anonymous="2/minute"))
    with app_client(classic_registry, cfg, monkeypatch) as client:
        statuses = [client.get("/capabilities").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert client.get("/health").status_code == 200
    cfg = config(rate_limits=RateLimitConfig(anonymous="1/minute", enabled=False))
    with app_client(classic_registry, cfg, monkeypatch) as client:
        assert {client.get("/capabilities").status_code for _ in range(3)} == {200}


def test_a_body_over_the_limit_is_413_before_parsing(open_client: TestClient):
    big = json.dumps({"texts": ["x" * 3000], "capabilities": ["sentiment"]})  # limit: 2048
    response = open_client.post(
        "/classify", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert error_type(response) == "body_too_large"


def test_a_chunked_body_over_the_limit_is_413(open_client: TestClient):
    def chunks() -> Iterator[bytes]:
        yield b'{"texts": ["'
        for _ in range(10):
            yield b"x" * 300
        yield b'"], "capabilities": ["sentiment"]}'

    response = open_client.post(
        "/classify", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413

    def small() -> Iterator[bytes]:
        yield b'{"texts": ["a fine'
        yield b' day"], "capabilities": ["sentiment"]}'

    ok = open_client.post(
        "/classify", content=small(), headers={"Content-Type": "application/json"}
    )
    assert ok.status_code == 200, ok.text


def test_long_capability_names_are_refused_and_never_echoed_whole(open_client: TestClient):
    name = "n" * 500
    response = open_client.post("/classify", json={"texts": ["a"], "capabilities": [name]})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "capabilities[0]"
    assert "n" * 65 not in response.text
    unknown = open_client.post("/classify", json={"texts": ["a"], "capabilities": ["m" * 64]})
    assert unknown.status_code == 422 and error_type(unknown) == "unknown_capability"


def test_a_forbidden_long_name_is_not_echoed_whole(secured: TestClient):
    body = {"texts": ["a"], "capabilities": ["q" * 300]}
    response = secured.post("/classify", json=body, headers={"X-API-Key": USER_KEY})
    assert response.status_code == 403
    assert "q" * 65 not in response.text


def test_every_answer_has_a_request_id_and_one_access_log_line(
    secured: TestClient, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.INFO, logger="capserve.access"):
        ok = secured.post("/classify?secret=query", json=CLASSIFY, headers={"X-API-Key": USER_KEY})
        refused = secured.post("/classify", json=CLASSIFY)
        given = secured.get("/health", headers={"X-Request-ID": "abc-123"})
        smuggled = secured.get("/health", headers={"X-Request-ID": "has spaces and text"})
    assert ok.json()["request_id"] == ok.headers["X-Request-ID"]
    assert refused.headers["X-Request-ID"] and given.headers["X-Request-ID"] == "abc-123"
    assert smuggled.headers["X-Request-ID"] != "has spaces and text"
    lines = [r.fields for r in caplog.records if r.name == "capserve.access"]  # type: ignore[attr-defined]
    assert [line["status"] for line in lines] == [200, 401, 200, 200]
    first = lines[0]
    assert first["tenant"] == "tenant-a" and first["path"] == "/classify"
    assert first["method"] == "POST" and first["latency_ms"] >= 0
    assert first["request_bytes"] == len(ok.request.content) > 0
    assert first["response_bytes"] == len(ok.content)
    assert lines[1]["tenant"] == "anonymous"
    logged = caplog.text + json.dumps(lines)
    for secret in (USER_KEY, "a fine day", "secret=query", "has spaces"):
        assert secret not in logged
