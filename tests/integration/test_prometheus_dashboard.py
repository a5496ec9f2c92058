"""The Grafana dashboard's queries on a real Prometheus scraping the session server (real
engines): after load that exercises every panel, each query returns data.

The load: distinct texts across capabilities of both engines and a rule (windows, capability
executions, labels, engine replica work), the same texts again (L1 hits, requests answered on
arrival), one request in naive mode, enough predictions of a rule capability to fill its drift
reference (so drift has a value), and a few refused requests (error series).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests import grafana_dashboard as board
from tests.integration.live_server import LiveServer
from tests.integration.log_canary import canary_text
from tests.prometheus_server import JOB, PrometheusServer, running_prometheus
from tests.prometheus_text import parse_samples

# Both engines (sentiment on MiniLM, t_safety on SmolLM2) and a rule with no model.
CAPABILITIES = ["sentiment", "pii", "t_safety"]
# A rule capability, cheap enough to fill its drift reference in the test.
DRIFT_CAPABILITY = "pii"
MAX_TEXTS_PER_REQUEST = 256
# Up to this many requests of MAX_TEXTS_PER_REQUEST to fill the drift reference (500 here).
MAX_DRIFT_CHUNKS = 8
# Successful scrapes after the load before the dashboard is queried.
SCRAPES_AFTER_LOAD = 3


@dataclass(frozen=True)
class Loaded:
    prometheus: PrometheusServer
    # What $__rate_interval stands for: long enough to span the whole load.
    rate_interval: str
    exposition: str


def post(client: httpx.Client, body: object, expected: int, **headers: str) -> None:
    response = client.post("/classify", json=body, headers=headers)
    assert response.status_code == expected, f"{response.status_code}: {response.text[:500]}"


def drift_value(client: httpx.Client, capability: str) -> float | None:
    reading = client.get("/stats").json()["drift"]["capabilities"].get(capability, {})
    value: float | None = reading.get("value")
    return value


def fill_drift_reference(client: httpx.Client, run: str) -> None:
    """Fresh predictions of DRIFT_CAPABILITY until its reference is full (its first
    reference_size predictions) and it has a drift value."""
    for chunk in range(MAX_DRIFT_CHUNKS):
        if drift_value(client, DRIFT_CAPABILITY) is not None:
            return
        texts = [
            canary_text(f"drift {run} {chunk} {i}: mail me at user{i}@example.com")
            for i in range(MAX_TEXTS_PER_REQUEST)
        ]
        post(client, {"texts": texts, "capabilities": [DRIFT_CAPABILITY]}, 200)
    assert drift_value(client, DRIFT_CAPABILITY) is not None, "drift reference still not full"


def send_load(client: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    fill_drift_reference(client, run)
    texts = [
        canary_text(f"dashboard {run}: thanks, the delivery was quick and friendly"),
        canary_text(f"dashboard {run}: write to jane.doe@example.com about my refund"),
        canary_text(f"dashboard {run}: the app crashes every time I open it"),
    ]
    body = {"texts": texts, "capabilities": CAPABILITIES}
    post(client, body, 200)  # fresh: a window, executions on both engines, labels
    post(client, body, 200)  # the same: answered whole from the L1 cache
    post(client, {"texts": [*texts[:1], canary_text(f"new {run}")], "capabilities": ["pii"]}, 200)
    naive = {"texts": [canary_text(f"naive {run}")], "capabilities": ["sentiment", "pii"]}
    post(client, naive, 200, **{"X-Capserve-Batching": "naive"})
    # Refused: an unknown capability, an invalid body, an unknown route.
    post(client, {"texts": texts[:1], "capabilities": ["no_such_capability"]}, 422)
    post(client, {"texts": "not a list", "capabilities": CAPABILITIES}, 422)
    assert client.get("/no/such/route").status_code == 404


@pytest.fixture(scope="module")
def loaded(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    target = server.url.removeprefix("http://")
    with (
        running_prometheus(tmp_path_factory.mktemp("prometheus"), target) as prometheus,
        httpx.Client(base_url=server.url, timeout=300) as client,
    ):
        started = time.time()
        prometheus.wait_for_scrapes(started, 2)  # the series exist before the load moves them
        send_load(client)
        finished = time.time()
        prometheus.wait_for_scrapes(finished, SCRAPES_AFTER_LOAD)
        # Grafana's $__rate_interval is about 4 scrape intervals; here the window spans the
        # whole load (at least 1m), so every rate sees what the load did.
        seconds = max(60, math.ceil(time.time() - started) + 5)
        exposition = client.get("/metrics").text
        yield Loaded(prometheus, f"{seconds}s", exposition)


def has_data(result: list[dict[str, object]]) -> bool:
    """At least one sample that is a number (NaN, e.g. 0/0, draws nothing)."""
    for series in result:
        value = series.get("value")
        if isinstance(value, list) and not math.isnan(float(value[1])):
            return True
    return False


def test_every_dashboard_query_returns_data(loaded: Loaded):
    dashboard = board.load()
    queries = board.queries(dashboard)
    found = board.count_exprs(dashboard) + sum(q.where.startswith("variable ") for q in queries)
    values = board.variable_values(dashboard, loaded.rate_interval)
    failures: list[str] = []
    checked = 0
    for query in queries:
        checked += 1
        try:
            if query.label_values is not None:
                match, label = query.label_values
                if not loaded.prometheus.label_values(label, board.substitute(match, values)):
                    failures.append(f"{query.where}: no values: {query.raw}")
                continue
            expr = board.substitute(query.raw, values)
            if not has_data(loaded.prometheus.query(expr)):
                failures.append(f"{query.where}: no data: {expr}")
        except Exception as exc:
            failures.append(f"{query.where}: {exc}: {query.raw}")
    assert not failures, f"{len(failures)} of {checked} dashboard queries failed:\n" + "\n".join(
        failures
    )
    assert checked == found == len(queries) > 0


def test_every_dashboard_metric_is_on_the_server_metrics(loaded: Loaded):
    exposed = set(parse_samples(loaded.exposition))
    queried = {name for q in board.queries(board.load()) for name in board.metric_names(q.raw)}
    assert queried, "the dashboard queries no capserve metric"
    assert queried <= exposed, f"not on /metrics: {sorted(queried - exposed)}"


def test_prometheus_scraped_the_server_as_up(loaded: Loaded):
    (result,) = loaded.prometheus.query(f'up{{job="{JOB}"}}')
    assert result["value"][1] == "1"
