"""capserve on Ray Serve (`capserve serve --ray`) on a real local Ray cluster of 2 CPUs: two
replicas of one CPU each, every one a whole runtime with its own MiniLM engine, sharing a real
Redis L2 under one cache secret, behind the ingress and the text-affinity router.

- The API answers through the ingress, and both replicas serve.
- A text computed by one replica is a cache hit on the other (L2, shared secret).
- One replica killed (SIGKILL) under a bounded load: every request ends with a 200, or a 503
  with Retry-After at worst; none hangs or is lost; Ray Serve brings a new replica up.
- Without the shared cache secret, `serve --ray` refuses to start (exit 2).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
import pytest
import yaml

from tests.integration.live_server import REPO, LiveServer, free_port
from tests.integration.log_canary import canary_text
from tests.redis_server import RedisServer, running_redis

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="2 replicas need 2 cores"),
]

CAPABILITY = "t_mood"
MOOD = """\
name: t_mood
kind: embedding_similarity
description: Test-only. Whether a text sounds pleased or annoyed.
model: minilm
labels:
  - name: pleased
    description: the writer is happy or satisfied.
  - name: annoyed
    description: the writer is unhappy or irritated.
"""
SECRET = "ray-test-cache-secret"
REPLICA_HEADER = "x-capserve-replica"
STARTUP_TIMEOUT_S = 900
LOAD_CLIENTS = 3  # bounded: the load stays well under every replica's max_ongoing_requests


def ray_config(folder: Path, redis: RedisServer) -> Path:
    """configs/default.yaml on MiniLM alone, one test capability, 2 replicas of 1 CPU."""
    capabilities = folder / "capabilities"
    capabilities.mkdir()
    (capabilities / "t_mood.yaml").write_text(MOOD)
    config = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    config["models"] = {"minilm": config["models"]["minilm"]}
    config["capabilities_dir"] = str(capabilities)
    config["auth"] = "none"
    config["server"]["host"] = "127.0.0.1"
    config["cache"]["redis_url"] = redis.url
    config["ray"].update({"local_cpus": 2, "num_replicas": 2, "replica_cpus": 1})
    path = folder / "capserve.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def capserve_ray(
    config: Path, port: int, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    capserve = Path(sys.executable).parent / "capserve"
    cmd = [str(capserve), "serve", "--ray", "--config", str(config), "--port", str(port)]
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=REPO
        )


def classify(client: httpx.Client, texts: list[str]) -> httpx.Response:
    return client.post("/classify", json={"texts": texts, "capabilities": [CAPABILITY]})


def replicas_answering(url: str, timeout_s: float, count: int = 2) -> set[str]:
    """Replica ids seen answering distinct requests, once `count` of them have (fails after
    `timeout_s`)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    n = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        while len(seen) < count:
            assert time.monotonic() < deadline, f"replicas answering after {timeout_s} s: {seen}"
            n += 1
            try:
                response = classify(client, [canary_text(f"Warm-up note {n} {time.time()}.")])
            except httpx.TransportError:
                time.sleep(1)
                continue
            if response.status_code == 200:
                seen.add(response.headers[REPLICA_HEADER])
            else:
                time.sleep(0.5)
    return seen


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("ray-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def ray_server(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer
) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("ray-server")
    config = ray_config(folder, redis)
    port = free_port()
    env = {"CAPSERVE_CACHE_SECRET": SECRET, "CAPSERVE_REDIS_PASSWORD": redis.password}
    process = capserve_ray(config, port, folder / "server.log", env)
    live = LiveServer(f"http://127.0.0.1:{port}", folder / "server.log", process, folder)
    started: list[psutil.Process] = []
    try:
        live.wait_ready(timeout_s=STARTUP_TIMEOUT_S, path="/health/ready")
        replicas_answering(live.url, STARTUP_TIMEOUT_S)
        started = live.descendants()
        yield live
    finally:
        started += live.descendants()
        live.stop()
        for process in started:  # Ray's processes, engines included: nothing outlives the test
            with contextlib.suppress(psutil.Error):
                process.kill()


def test_the_api_answers_through_the_ingress_on_both_replicas(ray_server: LiveServer):
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        assert client.get("/health/live").json() == {"status": "ok"}
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["engines"]["minilm"]["state"] == "ready"
        response = classify(client, [canary_text("Thanks, the parcel arrived early!")])
        assert response.status_code == 200, response.text
        (text,) = response.json()["results"]
        assert text["results"][CAPABILITY]["label"] == "pleased"
        assert response.headers[REPLICA_HEADER]
        # The single server's validation, unchanged behind the ingress.
        bad = client.post("/classify", json={"texts": [], "capabilities": [CAPABILITY]})
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "validation_error"
        unknown = client.post("/classify", json={"texts": ["x"], "capabilities": ["nope"]})
        assert unknown.status_code in (400, 422)
    assert len(replicas_answering(ray_server.url, 120)) == 2


def test_the_same_texts_go_to_the_same_replica(ray_server: LiveServer):
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        for n in range(6):
            texts = [canary_text(f"Affinity text {n} {time.time()}.")]
            first = classify(client, texts)
            again = classify(client, texts)
            assert first.status_code == again.status_code == 200
            assert first.headers[REPLICA_HEADER] == again.headers[REPLICA_HEADER]
            assert again.json()["cached"] is True  # its own L1 (or the shared L2)


def test_a_text_computed_on_one_replica_is_a_cache_hit_on_the_other(ray_server: LiveServer):
    text = canary_text(f"The refund took three weeks and nobody answered {time.time()}.")
    with httpx.Client(base_url=ray_server.url, timeout=60) as client:
        first = classify(client, [text])
        assert first.status_code == 200 and first.json()["cached"] is False
        owner = first.headers[REPLICA_HEADER]
        # The same text in requests of other shapes (other affinity keys) until one lands on
        # the other replica, which never computed it: its answer comes from the shared L2.
        for copies in range(2, 40):
            response = classify(client, [text] * copies)
            assert response.status_code == 200
            if response.headers[REPLICA_HEADER] != owner:
                break
        else:
            pytest.fail("no request shape reached the other replica")
        assert response.json()["cached"] is True
        results = {t["results"][CAPABILITY]["label"] for t in response.json()["results"]}
        assert results == {first.json()["results"][0]["results"][CAPABILITY]["label"]}


@dataclass
class Load:
    """LOAD_CLIENTS threads sending distinct texts until stopped; every outcome recorded."""

    url: str
    statuses: Counter[int] = field(default_factory=Counter)
    replicas: Counter[str] = field(default_factory=Counter)
    missing_retry_after: int = 0
    transport_errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, worker: int) -> None:
        n = 0
        with httpx.Client(base_url=self.url, timeout=300) as client:
            while not self.stop.is_set():
                n += 1
                texts = [canary_text(f"Load {worker}.{n}.{i} at {time.time()}.") for i in range(2)]
                try:
                    response = classify(client, texts)
                except httpx.TransportError as exc:
                    with self.lock:
                        self.transport_errors.append(type(exc).__name__)
                    continue
                with self.lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.replicas[response.headers[REPLICA_HEADER]] += 1
                    if response.status_code == 503 and "retry-after" not in response.headers:
                        self.missing_retry_after += 1


def replica_workers(server: LiveServer) -> list[psutil.Process]:
    """The Ray workers of the capserve replicas (processes the server started)."""
    workers = []
    for process in server.descendants():
        try:
            if "ServeReplica:capserve:capserve-replica" in " ".join(process.cmdline()):
                workers.append(process)
        except psutil.Error:
            continue
    return workers


def test_killing_a_replica_under_load_loses_no_request_and_ray_replaces_it(
    ray_server: LiveServer,
):
    before = replicas_answering(ray_server.url, 120)
    workers = replica_workers(ray_server)
    assert len(workers) == 2, [w.cmdline() for w in workers]
    load = Load(ray_server.url)
    pool = ThreadPoolExecutor(LOAD_CLIENTS)
    futures = [pool.submit(load.run, i) for i in range(LOAD_CLIENTS)]
    try:
        time.sleep(5)
        workers[0].send_signal(signal.SIGKILL)
        time.sleep(20)
    finally:
        load.stop.set()
        for future in futures:
            future.result(timeout=600)
        pool.shutdown()
    summary = f"statuses {dict(load.statuses)}, replicas {dict(load.replicas)}"
    print(summary)
    assert load.transport_errors == [], summary  # nothing hung or was dropped
    assert set(load.statuses) <= {200, 503}, summary
    assert load.missing_retry_after == 0, summary
    assert load.statuses[200] > 0, summary
    # Ray Serve brings a new replica up in the dead one's place: two replicas answer again,
    # one of them the survivor and one new.
    after = replicas_answering(ray_server.url, STARTUP_TIMEOUT_S)
    assert len(after) == 2 and len(after & before) == 1, (before, after)
