"""The Python client over httpx.MockTransport: typed results, credentials, exceptions by
status with the server's error body, bounded retries honouring Retry-After, classify_many's
order and per-batch failures."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from client import (
    AsyncCapserveClient,
    AuthError,
    BadRequest,
    CapserveClient,
    ConnectionFailed,
    RateLimited,
    RetryPolicy,
    ServerError,
    TimedOut,
    Unavailable,
)
from client.retry import RetryState

Handler = Callable[[httpx.Request], httpx.Response]
NO_WAIT = RetryPolicy(max_attempts=4, max_total_wait_s=10, backoff_s=0.0)


def answer(request: httpx.Request) -> httpx.Response:
    """A /classify answer: each text's label is the text itself (so order is visible)."""
    body = json.loads(request.content)
    results = [
        {"index": i, "results": {cap: {"label": text, "confidence": 0.9, "probabilities": {},
                                       "version": "v1"} for cap in body["capabilities"]}}
        for i, text in enumerate(body["texts"])
    ]  # fmt: skip
    return httpx.Response(200, json={"request_id": "r", "latency_ms": 1.0, "results": results,
                                     "window": None})  # fmt: skip


def error(status: int, kind: str, message: str = "no", **headers: str) -> httpx.Response:
    body = {"error": {"type": kind, "message": message, "details": []}}
    return httpx.Response(status, json=body, headers=headers)


class Script:
    """Answers with `responses` in turn (an exception is raised), then `answer`."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.responses:
            nxt = self.responses.pop(0)
            if isinstance(nxt, Exception):
                raise nxt
            return nxt
        return answer(request)


def sync_client(handler: Handler, **kwargs: object) -> CapserveClient:
    kwargs.setdefault("retry", NO_WAIT)
    return CapserveClient("http://capserve", transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def test_classify_sends_the_body_and_parses_typed_results():
    script = Script()
    with sync_client(script, api_key="k-1") as client:
        response = client.classify(["a", "b"], ["sentiment"], priority="low", timeout_ms=500)
    assert [r.results["sentiment"].label for r in response.results] == ["a", "b"]
    sent = json.loads(script.requests[0].content)
    assert sent == {
        "texts": ["a", "b"],
        "capabilities": ["sentiment"],
        "include_dependencies": False,
        "priority": "low",
        "timeout_ms": 500,
    }
    assert script.requests[0].headers["X-API-Key"] == "k-1"
    assert "Authorization" not in script.requests[0].headers


def test_a_jwt_goes_as_a_bearer_token_and_not_both_credentials():
    script = Script()
    with sync_client(script, token="jwt.abc") as client:
        client.classify(["a"], ["sentiment"])
    assert script.requests[0].headers["Authorization"] == "Bearer jwt.abc"
    with pytest.raises(ValueError, match="not both"):
        sync_client(script, token="t", api_key="k")


@pytest.mark.parametrize(
    ("status", "kind", "cls"),
    [(401, "unauthorized", AuthError), (403, "forbidden", AuthError),
     (422, "unknown_capability", BadRequest), (413, "body_too_large", BadRequest),
     (504, "timeout", TimedOut), (500, "capability_failed", ServerError)],
)  # fmt: skip
def test_errors_carry_status_type_and_message(status: int, kind: str, cls: type[Exception]):
    script = Script(error(status, kind, "capability 'x' failed on texts[0]"))
    with sync_client(script) as client, pytest.raises(cls) as raised:
        client.classify(["a"], ["x"])
    assert (raised.value.status, raised.value.type) == (status, kind)  # type: ignore[attr-defined]
    assert raised.value.message == "capability 'x' failed on texts[0]"  # type: ignore[attr-defined]
    assert len(script.requests) == 1  # not retried


def test_an_error_without_the_json_body_still_has_its_status():
    script = Script(httpx.Response(502, text="<html>bad gateway</html>"))
    with sync_client(script) as client, pytest.raises(ServerError) as raised:
        client.classify(["a"], ["x"])
    assert raised.value.status == 502 and raised.value.type == "http_error"


def test_503_and_429_are_retried_after_the_servers_retry_after(monkeypatch: pytest.MonkeyPatch):
    slept: list[float] = []
    monkeypatch.setattr("client.sync_client.time.sleep", slept.append)
    script = Script(error(503, "at_capacity", **{"Retry-After": "2"}),
                    error(429, "rate_limited", **{"Retry-After": "3"}))  # fmt: skip
    with sync_client(script) as client:
        response = client.classify(["a"], ["s"])
    assert response.results[0].results["s"].label == "a"
    assert slept == [2.0, 3.0] and len(script.requests) == 3


def test_retries_stop_at_max_attempts(monkeypatch: pytest.MonkeyPatch):
    slept: list[float] = []
    monkeypatch.setattr("client.sync_client.time.sleep", slept.append)
    script = Script(*[error(503, "engine_unavailable", **{"Retry-After": "1"})] * 10)
    with sync_client(script) as client, pytest.raises(Unavailable) as raised:
        client.classify(["a"], ["s"])
    assert len(script.requests) == NO_WAIT.max_attempts and len(slept) == 3
    assert raised.value.retry_after_s == 1.0 and raised.value.type == "engine_unavailable"


def test_retries_stop_before_the_total_wait_is_exceeded(monkeypatch: pytest.MonkeyPatch):
    slept: list[float] = []
    monkeypatch.setattr("client.sync_client.time.sleep", slept.append)
    policy = RetryPolicy(max_attempts=10, max_total_wait_s=5)
    script = Script(*[error(429, "rate_limited", **{"Retry-After": "2"})] * 10)
    with sync_client(script, retry=policy) as client, pytest.raises(RateLimited):
        client.classify(["a"], ["s"])
    assert slept == [2.0, 2.0]  # a third wait would make 6 s > 5 s
    assert len(script.requests) == 3


def test_connection_errors_are_retried_with_backoff_then_raised(monkeypatch: pytest.MonkeyPatch):
    slept: list[float] = []
    monkeypatch.setattr("client.sync_client.time.sleep", slept.append)
    policy = RetryPolicy(max_attempts=3, backoff_s=0.5)
    refused = httpx.ConnectError("connection refused")
    script = Script(refused, refused)
    with sync_client(script, retry=policy) as client:
        assert client.classify(["a"], ["s"]).results[0].index == 0  # the server came back
    assert slept == [0.5, 1.0]
    script = Script(refused, refused, refused)
    with sync_client(script, retry=policy) as client, pytest.raises(ConnectionFailed) as raised:
        client.classify(["a"], ["s"])
    assert raised.value.status is None and len(script.requests) == 3


def test_retry_policy_bounds_are_checked():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    state = RetryState(RetryPolicy(max_attempts=2, backoff_s=1))
    assert state.next_delay(Unavailable("x", 503)) == 1.0
    assert state.next_delay(Unavailable("x", 503)) is None  # the 2 attempts are spent
    assert RetryState(RetryPolicy()).next_delay(BadRequest("x", 422)) is None


def test_sync_classify_many_keeps_order_and_fails_only_the_bad_batch():
    def handler(request: httpx.Request) -> httpx.Response:
        if "bad" in json.loads(request.content)["texts"]:
            return error(422, "validation_error", "texts[1]: too long")
        return answer(request)

    texts = [f"t{i}" for i in range(10)]
    texts[5] = "bad"
    with sync_client(handler) as client:
        outcomes = client.classify_many(iter(texts), ["s"], batch_size=3, concurrency=3)
    assert [o.index for o in outcomes] == list(range(10))
    assert [o.ok for o in outcomes] == [True] * 3 + [False] * 3 + [True] * 4
    assert all(isinstance(o.error, BadRequest) for o in outcomes[3:6])
    labels = [o.result.results["s"].label for o in outcomes if o.result is not None]
    assert labels == [t for i, t in enumerate(texts) if not 3 <= i < 6]


async def test_async_classify_many_keeps_order_with_at_most_n_in_flight():
    import asyncio

    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        texts = json.loads(request.content)["texts"]
        await asyncio.sleep(0.02 if texts[0] == "t0" else 0.001)  # the first batch ends last
        in_flight -= 1
        if texts[0] == "t4":
            return error(503, "shutting_down")
        return answer(request)

    transport = httpx.MockTransport(handler)
    policy = RetryPolicy(max_attempts=1)
    async with AsyncCapserveClient("http://c", transport=transport, retry=policy) as client:
        outcomes = await client.classify_many(
            [f"t{i}" for i in range(9)], ["s"], batch_size=2, concurrency=2
        )
    assert [o.index for o in outcomes] == list(range(9))
    assert peak == 2
    assert [o.ok for o in outcomes] == [True] * 4 + [False] * 2 + [True] * 3
    assert isinstance(outcomes[4].error, Unavailable) and outcomes[4].error.status == 503
    assert outcomes[8].result is not None and outcomes[8].result.results["s"].label == "t8"


async def test_async_client_retries_after_retry_after(monkeypatch: pytest.MonkeyPatch):
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr("client.async_client.asyncio.sleep", fake_sleep)
    script = Script(error(503, "at_capacity", **{"Retry-After": "4"}), httpx.ReadError("reset"))
    transport = httpx.MockTransport(script)
    async with AsyncCapserveClient("http://c", transport=transport, retry=NO_WAIT) as client:
        response = await client.classify(["a"], ["s"])
    assert response.results[0].results["s"].label == "a"
    assert slept == [4.0, 0.0] and len(script.requests) == 3


def test_retry_after_zero_still_waits_the_first_backoff_step(monkeypatch: pytest.MonkeyPatch):
    slept: list[float] = []
    monkeypatch.setattr("client.sync_client.time.sleep", slept.append)
    script = Script(error(503, "starting", **{"Retry-After": "0"}))
    with sync_client(script, retry=RetryPolicy(max_attempts=3, backoff_s=0.25)) as client:
        client.classify(["a"], ["s"])
    assert slept == [0.25]


def test_a_request_that_cannot_be_sent_is_not_retried_and_hides_its_headers():
    bad = httpx.LocalProtocolError("Illegal header value b'Bearer cs-secret\\n'")
    script = Script(bad, bad, bad)
    policy = RetryPolicy(max_attempts=3)
    with sync_client(script, retry=policy) as client, pytest.raises(BadRequest) as raised:
        client.classify(["a"], ["s"])
    assert len(script.requests) == 1 and "cs-secret" not in str(raised.value)


def test_credentials_with_whitespace_are_refused_without_their_value():
    with pytest.raises(ValueError) as raised:
        CapserveClient("http://capserve", api_key="cs-secret\n")
    assert "cs-secret" not in str(raised.value)


def test_an_invalid_request_is_a_bad_request_before_anything_is_sent():
    script = Script()
    with sync_client(script) as client, pytest.raises(BadRequest) as raised:
        client.classify(["a"], ["s"], timeout_ms=0)
    assert raised.value.type == "validation_error" and not script.requests
