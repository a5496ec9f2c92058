"""GET /dashboard (the app with a fake pool): the page and its files, its stats, and its auth,
where HTTP Basic (the key as the password) is accepted as well as Bearer and X-API-Key."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from capabilities.registry import CapabilityRegistry
from schemas.config import ApiKeyConfig, AuthConfig, CapServeConfig
from server.api.app import create_app
from server.api.auth.keys import hash_key
from server.observability.stats import ServerStats, WindowSizes
from server.runtime import Runtime
from tests.unit.auth_fixtures import ADMIN_KEY, USER_KEY, config
from tests.unit.fakes import FakePool
from tests.unit.window_reports import labelled, window_report

PATHS = ["/dashboard", "/dashboard/stats", "/dashboard/dashboard.js", "/dashboard/dashboard.css"]
# The one absolute URL of the page's files: the SVG namespace name, an identifier never fetched.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def basic(password: str, user: str = "operator") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_for(registry: CapabilityRegistry, cfg: CapServeConfig) -> TestClient:
    return TestClient(create_app(Runtime(cfg, registry, FakePool())))


@pytest.fixture
def open_client(classic_registry: CapabilityRegistry) -> Iterator[TestClient]:
    with client_for(classic_registry, config()) as client:
        yield client


@pytest.fixture
def secured(classic_registry: CapabilityRegistry) -> Iterator[TestClient]:
    """Auth on: a user key and an admin key, neither with a rate limit of its own."""
    keys = [
        ApiKeyConfig(name="tenant-a", sha256=hash_key(USER_KEY), capabilities=["sentiment"]),
        ApiKeyConfig(name="ops", sha256=hash_key(ADMIN_KEY), admin=True),
    ]
    with client_for(classic_registry, config(AuthConfig(keys=keys))) as client:
        yield client


def test_page_is_html_with_its_script_style_and_a_strict_policy(open_client: TestClient):
    page = open_client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/dashboard/dashboard.js"' in page.text
    assert 'href="/dashboard/dashboard.css"' in page.text
    assert page.headers["cache-control"] == "no-store"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    script = open_client.get("/dashboard/dashboard.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert 'fetch("/dashboard/stats"' in script.text
    style = open_client.get("/dashboard/dashboard.css")
    assert style.status_code == 200
    assert style.headers["content-type"] == "text/css; charset=utf-8"


def test_page_loads_nothing_from_another_host(open_client: TestClient):
    files = {path: open_client.get(path).text for path in PATHS if path != "/dashboard/stats"}
    page = files["/dashboard"]
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert references, "the page references its script and style"
    for reference in references:
        assert reference.startswith("/dashboard/") or reference.startswith("data:"), reference
    for path, text in files.items():
        absolute = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"')]*", text)) - {SVG_NAMESPACE}
        absolute = {url for url in absolute if not url.startswith("// ")}
        assert not absolute, f"{path} names other hosts: {sorted(absolute)}"
        assert "@import" not in text and "url(" not in text, path


def test_dashboard_stats_are_the_stats(open_client: TestClient):
    open_client.post("/classify", json={"texts": ["a", "b"], "capabilities": ["sentiment"]})
    stats = open_client.get("/stats").json()
    dashboard = open_client.get("/dashboard/stats")
    assert dashboard.status_code == 200
    assert dashboard.headers["cache-control"] == "no-store"
    assert dashboard.headers["x-content-type-options"] == "nosniff"
    body = dashboard.json()
    assert set(body) == set(stats)
    assert body["requests"] == stats["requests"] == 1
    assert body["window_texts"]["last"] == 2
    for section in ("latency_ms", "cache", "drift", "admission", "batching", "engines"):
        assert body[section], section


def test_open_with_auth_off(open_client: TestClient):
    for path in PATHS:
        assert open_client.get(path).status_code == 200, path


@pytest.mark.parametrize("path", PATHS)
def test_without_credentials_401_with_a_basic_challenge(secured: TestClient, path: str):
    response = secured.get(path)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="capserve"')


@pytest.mark.parametrize(
    "headers",
    [
        basic(ADMIN_KEY),
        basic(ADMIN_KEY, user=""),
        {"Authorization": f"Bearer {ADMIN_KEY}"},
        {"X-API-Key": ADMIN_KEY},
    ],
    ids=["basic", "basic-no-user", "bearer", "x-api-key"],
)
def test_the_admin_key_opens_every_dashboard_path(secured: TestClient, headers: dict[str, str]):
    for path in PATHS:
        response = secured.get(path, headers=headers)
        assert response.status_code == 200, path
    assert "window_texts" in secured.get("/dashboard/stats", headers=headers).json()


@pytest.mark.parametrize(
    "headers", [basic(USER_KEY), {"X-API-Key": USER_KEY}], ids=["basic", "x-api-key"]
)
def test_a_non_admin_key_is_403(secured: TestClient, headers: dict[str, str]):
    for path in PATHS:
        response = secured.get(path, headers=headers)
        assert response.status_code == 403, path
        assert response.json()["error"]["type"] == "forbidden"


@pytest.mark.parametrize(
    "headers",
    [
        basic("not-a-key"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(ADMIN_KEY.encode()).decode()},  # no colon
        basic(""),
    ],
    ids=["wrong-key", "not-base64", "no-colon", "empty-password"],
)
def test_bad_basic_credentials_401_and_are_not_echoed(secured: TestClient, headers: dict[str, str]):
    response = secured.get("/dashboard", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="capserve"')
    assert "not-a-key" not in response.text and ADMIN_KEY not in response.text


def test_basic_is_accepted_only_on_the_dashboard(secured: TestClient):
    for method, path in [("get", "/stats"), ("get", "/capabilities"), ("post", "/admin/reload")]:
        response = secured.request(method, path, headers=basic(ADMIN_KEY))
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert secured.get("/dashboardx", headers=basic(ADMIN_KEY)).status_code == 401


def test_the_credential_is_never_logged(secured: TestClient, caplog: pytest.LogCaptureFixture):
    headers = basic(ADMIN_KEY)
    with caplog.at_level(logging.DEBUG):
        assert secured.get("/dashboard/stats", headers=headers).status_code == 200
        assert secured.get("/dashboard", headers=basic("wrong-key")).status_code == 401
    assert caplog.records, "the access log wrote its lines"
    for secret in (ADMIN_KEY, headers["Authorization"].split()[1], "wrong-key"):
        assert secret not in caplog.text


def test_window_sizes_describe_the_recent_windows():
    sizes = WindowSizes(keep=5, shown=3)
    empty = sizes.snapshot()
    assert empty["last"] is None and empty["recent"] == []
    for texts in (1, 2, 3, 4, 10, 6):
        sizes.add(texts)
    snapshot = sizes.snapshot()
    assert snapshot["recent"] == [4, 10, 6]
    assert snapshot["last"] == 6 and snapshot["max"] == 10  # the first (1) was dropped
    assert snapshot["mean"] == 5.0 and snapshot["p50"] == 4 and snapshot["p95"] == 10


def test_stats_count_each_windows_texts():
    stats = ServerStats()
    stats.window_finished(window_report({"sentiment": [labelled("sentiment", "positive")] * 3}))
    stats.window_finished(window_report({"sentiment": [labelled("sentiment", "neutral")]}))
    section = stats.snapshot()["window_texts"]
    assert section["recent"] == [3, 1] and section["last"] == 1 and section["max"] == 3
