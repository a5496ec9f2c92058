"""The result cache on the live server (real engines, a real Redis L2 with a password)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.integration.live_server import LiveServer
from tests.redis_server import RedisServer

UNAVAILABLE = "is unavailable"
BACK = "is back"


def classify(client: httpx.Client, texts: list[str], caps: list[str]) -> Any:
    response = client.post("/classify", json={"texts": texts, "capabilities": caps})
    assert response.status_code == 200, response.text
    return response.json()


def engine_requests(stats: dict[str, Any]) -> dict[str, int]:
    return {name: work["requests"] for name, work in stats["engines"]["work"].items()}


def closure(client: httpx.Client, caps: list[str]) -> set[str]:
    """The capabilities and every dependency they need, from the server's /capabilities."""
    known = {c["name"]: c for c in client.get("/capabilities").json()["capabilities"]}
    needed: set[str] = set()
    todo = list(caps)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(known[name]["depends_on"])
    return needed


def test_a_repeated_request_is_answered_from_the_cache(client: httpx.Client):
    texts = ["Result cache check: the hotel room was spotless.", "Result cache check: refund?"]
    caps = ["sentiment", "topic", "route"]
    first = classify(client, texts, caps)
    assert first["cached"] is False and first["window"] is not None
    before = client.get("/stats").json()
    second = classify(client, list(reversed(texts)), caps)
    after = client.get("/stats").json()
    assert second["cached"] is True and second["window"] is None
    assert second["results"][0]["results"] == first["results"][1]["results"]
    assert engine_requests(after) == engine_requests(before)  # no engine saw the request
    assert after["windows"] == before["windows"]
    cache, cached_before = after["cache"], before["cache"]
    assert cache["answered_on_arrival"] == cached_before["answered_on_arrival"] + 1
    assert cache["l1"]["hits"] >= cached_before["l1"]["hits"] + 6  # 3 capabilities x 2 texts
    # Every capability of the closure is spared for both texts: route needs task_type and the
    # formula complexity over its seven dimensions (12 capabilities with sentiment and topic).
    needed = closure(client, caps)
    assert {"task_type", "complexity", "reasoning", "number_of_few_shots"} <= needed
    assert cache["executions_saved"] >= cached_before["executions_saved"] + 2 * len(needed)
    assert cache["capabilities"]["route"]["hits"] >= 2
    assert cache["l2"]["state"] == "up" and cache["l2"]["url"].startswith("redis://127.0.0.1:")


def _l2_state(client: httpx.Client) -> str:
    state: str = client.get("/stats").json()["cache"]["l2"]["state"]
    return state


def test_redis_going_down_and_coming_back_under_the_live_server(
    client: httpx.Client, server: LiveServer, redis_l2: RedisServer
):
    repeated = ["Redis outage check: my parcel arrived broken."]
    classify(client, repeated, ["sentiment"])
    assert server.log().count(UNAVAILABLE) == 0
    redis_l2.stop()
    try:
        for i in range(3):  # served from L1 and the engines; none fails
            assert classify(client, repeated, ["sentiment"])["cached"] is True
            body = classify(client, [f"Redis outage check, fresh text {i}."], ["sentiment"])
            assert body["results"][0]["results"]["sentiment"]["label"]
        assert _l2_state(client) == "down"
    finally:
        redis_l2.start()  # same port and password, empty
    deadline = time.monotonic() + 60
    attempt = 0
    while _l2_state(client) != "up":  # the cache reconnects by itself after its back-off
        assert time.monotonic() < deadline, "the cache did not reconnect to Redis"
        attempt += 1
        classify(client, [f"Redis reconnect check {attempt}."], ["topic"])
        time.sleep(0.5)
    classify(client, ["Redis is back: this result is stored there."], ["topic"])
    with redis_l2.client() as direct:
        assert direct.dbsize() >= 1  # writes reach Redis again
    log = server.log()
    assert log.count(UNAVAILABLE) == 1 and log.count(BACK) == 1
    assert redis_l2.password not in log
