"""Authentication, permissions, rate limits, the body limit and the JSON access log against a
real server (real engines) with two API keys and HS256 JWTs: the `secured` server
(conftest.py), up for this module only; the Python client and `capserve classify` with auth on
are at the end. RS256 (JWKS) is covered by the unit tests. Also: an open server refuses a
public address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client import AuthError, CapserveClient
from tests.integration.live_server import REPO, LiveServer, write_config
from tests.integration.log_canary import canary_text
from tests.integration.secured_server import ADMIN_RATE, MAX_BODY, USER_CAPABILITIES
from tests.integration.security_secrets import (
    ADMIN_KEY,
    EXPIRED_TOKEN,
    USER_KEY,
    VALID_TOKEN,
    WRONG_AUDIENCE_TOKEN,
)

pytestmark = pytest.mark.slow

SENTIMENTS = {"positive", "negative", "neutral"}
CAPSERVE = Path(sys.executable).parent / "capserve"


@pytest.fixture
def client(secured: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.url, timeout=300) as c:
        yield c


def classify(capabilities: list[str], **extra: object) -> dict[str, object]:
    return {"texts": [canary_text("the service was great")], "capabilities": capabilities, **extra}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("not-a-key"), {"X-API-Key": "not-a-key"}, {"Authorization": f"Basic {USER_KEY}"}],
)
def test_401_without_or_with_bad_credentials(client: httpx.Client, headers: dict[str, str]):
    for method, path in (("POST", "/classify"), ("GET", "/capabilities"), ("GET", "/stats")):
        response = client.request(method, path, json=classify(["sentiment"]), headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["type"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_bearer_and_x_api_key_both_classify(client: httpx.Client):
    for headers in (bearer(USER_KEY), {"X-API-Key": USER_KEY}):
        response = client.post("/classify", json=classify(["sentiment"]), headers=headers)
        assert response.status_code == 200, response.text
        result = response.json()["results"][0]["results"]["sentiment"]
        assert result["label"] in {"positive", "negative", "neutral"}
        assert response.headers["X-Request-ID"] == response.json()["request_id"]


def test_403_for_a_capability_the_key_may_not_use(client: httpx.Client):
    response = client.post("/classify", json=classify(["topic"]), headers=bearer(USER_KEY))
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "forbidden"
    assert "'topic'" in response.json()["error"]["message"]
    # alerts is allowed, but its dependency safety is not: it may not be returned.
    with_deps = classify(["alerts"], include_dependencies=True)
    assert client.post("/classify", json=with_deps, headers=bearer(USER_KEY)).status_code == 403
    alone = client.post("/classify", json=classify(["alerts"]), headers=bearer(USER_KEY))
    assert alone.status_code == 200, alone.text
    assert set(alone.json()["results"][0]["results"]) == {"alerts"}


def test_admin_needs_an_admin_key(client: httpx.Client):
    refused = client.post("/admin/reload?dry_run=true", headers={"X-API-Key": USER_KEY})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden"
    assert client.post("/admin/reload?dry_run=true").status_code == 401
    allowed = client.post("/admin/reload?dry_run=true", headers={"X-API-Key": ADMIN_KEY})
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["dry_run"] is True


def test_jwt_accepted_expired_and_wrong_audience(client: httpx.Client):
    ok = client.post("/classify", json=classify(["sentiment"]), headers=bearer(VALID_TOKEN))
    assert ok.status_code == 200, ok.text
    # The token's capabilities claim holds sentiment only.
    assert (
        client.post("/classify", json=classify(["pii"]), headers=bearer(VALID_TOKEN)).status_code
        == 403
    )
    for token, reason in ((EXPIRED_TOKEN, "expired"), (WRONG_AUDIENCE_TOKEN, "audience")):
        response = client.post("/classify", json=classify(["sentiment"]), headers=bearer(token))
        assert response.status_code == 401
        assert reason in response.json()["error"]["message"]
        assert token not in response.text


def test_413_for_a_body_over_the_limit(client: httpx.Client):
    big = json.dumps({"texts": ["x" * (MAX_BODY + 1)], "capabilities": ["sentiment"]})
    headers = {**bearer(USER_KEY), "Content-Type": "application/json"}
    response = client.post("/classify", content=big, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes are counted as they come
        yield b'{"texts": ["'
        for _ in range(MAX_BODY // 4096 + 1):
            yield b"y" * 4096
        yield b'"], "capabilities": ["sentiment"]}'

    chunked = client.post("/classify", content=chunks(), headers=headers)
    assert chunked.status_code == 413
    assert "Content-Length" not in chunked.request.headers


def test_health_and_metrics_need_no_credentials(client: httpx.Client):
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code != 401


def test_access_log_is_json_with_request_id_tenant_and_sizes(
    client: httpx.Client, secured: LiveServer
):
    response = client.post("/classify", json=classify(["pii"]), headers={"X-API-Key": USER_KEY})
    assert response.status_code == 200, response.text
    request_id = response.headers["X-Request-ID"]
    deadline = time.monotonic() + 30  # the line is written just after the answer is sent
    while True:
        lines = [json.loads(line) for line in secured.log().splitlines() if line.startswith("{")]
        mine = [line for line in lines if line.get("request_id") == request_id]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(mine) == 1, f"{len(lines)} JSON lines"
    line = mine[0]
    assert line["tenant"] == "tenant-a" and line["path"] == "/classify"
    assert line["status"] == 200 and line["latency_ms"] > 0
    assert line["request_bytes"] > 0 and line["response_bytes"] == len(response.content)
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    assert any(line["logger"].startswith("vllm") for line in lines)


def test_429_with_retry_after_over_the_key_rate(client: httpx.Client):
    """Last in the module: it spends the admin key's rate."""
    statuses = []
    for _ in range(ADMIN_RATE + 1):
        response = client.get("/capabilities", headers={"X-API-Key": ADMIN_KEY})
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[-1] == 429, statuses
    assert response.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # Another key is not affected; health is never limited.
    assert client.get("/capabilities", headers={"X-API-Key": USER_KEY}).status_code == 200
    assert client.get("/health", headers={"X-API-Key": ADMIN_KEY}).status_code == 200


def test_an_open_server_on_a_public_address_refuses_to_start(tmp_path: Path):
    config = write_config(tmp_path, {"auth": {"mode": "auto", "keys": []}}, test_capabilities=False)
    capserve = Path(sys.executable).parent / "capserve"
    env = {k: v for k, v in os.environ.items() if k != "CAPSERVE_API_KEYS"}
    done = subprocess.run(
        [str(capserve), "serve", "--config", str(config), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "auth: none" in done.stderr and "keys" in done.stderr
    assert "starting engine" not in done.stdout + done.stderr


# The Python client and `capserve classify` with auth on (tests/integration/test_client.py has
# them with auth off): here, so that the secured server lives for this module only.
def test_auth_on_with_an_api_key_a_jwt_and_without(secured: LiveServer):
    with CapserveClient(secured.url, api_key=USER_KEY) as client:
        response = client.classify(["the service was great"], USER_CAPABILITIES[:1])
        assert response.results[0].results["sentiment"].label in SENTIMENTS
        with pytest.raises(AuthError) as forbidden:
            client.classify(["the service was great"], ["topic"])
        assert forbidden.value.status == 403 and forbidden.value.type == "forbidden"
        assert "'topic'" in forbidden.value.message
    with CapserveClient(secured.url, token=VALID_TOKEN) as client:
        sentiment = client.classify(["awful"], ["sentiment"]).results[0].results["sentiment"]
        assert sentiment.label in SENTIMENTS
    with CapserveClient(secured.url) as client, pytest.raises(AuthError) as unauthorized:
        client.classify(["the service was great"], ["sentiment"])
    assert unauthorized.value.status == 401 and unauthorized.value.type == "unauthorized"
    assert USER_KEY not in str(unauthorized.value)


def test_classify_file_with_auth_from_an_env_var(secured: LiveServer, tmp_path: Path):
    rows = tmp_path / "rows.csv"
    rows.write_text("id,body\na1,the service was great\na2,the food was cold\n")
    out = tmp_path / "out.jsonl"
    command = [str(CAPSERVE), "classify", str(rows), "--capabilities", "sentiment,pii",
               "--text-field", "body", "--id-field", "id", "--url", secured.url,
               "--output", str(out), "--api-key-env", "TEST_CAPSERVE_KEY"]  # fmt: skip
    env = {**os.environ, "TEST_CAPSERVE_KEY": USER_KEY}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["a1", "a2"]
    assert all(r["ok"] and set(r["results"]) == {"sentiment", "pii"} for r in records)
    assert USER_KEY not in done.stderr + done.stdout
    # Without the variable: a usage error, and nothing is sent.
    del env["TEST_CAPSERVE_KEY"]
    refused = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    assert refused.returncode == 2 and "TEST_CAPSERVE_KEY is not set" in refused.stderr
