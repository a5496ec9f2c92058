"""Hot reload on the live server under concurrent load: a new capability, a changed one, an
invalid set, a dry run and the removal, with every /classify request answered 200 throughout.

The test writes YAML-only capabilities (an embedding_similarity on minilm and a rule over it)
into the session server's capabilities folder, and removes them and reloads at the end, so the
tests that share the server see the original set again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.live_server import LiveServer

WORKERS = 4
PHASE_S = 4.0
SUFFIX = uuid.uuid4().hex[:8]
SIMILARITY = f"t_reload_{SUFFIX}"
GATE = f"t_reload_gate_{SUFFIX}"
DRY = f"t_reload_dry_{SUFFIX}"
BROKEN = f"t_reload_broken_{SUFFIX}"
ORPHAN = f"t_reload_orphan_{SUFFIX}"
# What the load asks before, during and after the test capabilities exist (shipped ones).
BASE_REQUESTS = (["topic"], ["sentiment"], ["escalation"], ["topic", "sentiment"])
SENTENCES = (
    "my order arrived late and the box was damaged",
    "how do I reset the password of my account",
    "the invoice charged me twice this month",
    "what a lovely hotel, the staff were wonderful",
)


def similarity_definition(*extra_labels: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": SIMILARITY,
        "kind": "embedding_similarity",
        "model": "minilm",
        "description": "Hot reload test: what a customer message is about.",
        "labels": [
            {
                "name": "delivery",
                "description": "parcels, shipping, couriers and late or damaged deliveries",
                "examples": ["Where is my parcel?", "The courier left the box in the rain"],
            },
            {
                "name": "billing",
                "description": "invoices, payments, charges and refunds",
                "examples": ["I was charged twice", "When do I get my refund?"],
            },
            *extra_labels,
        ],
    }


GATE_DEFINITION = {
    "name": GATE,
    "kind": "rule",
    "description": "Hot reload test: billing messages go to finance.",
    "depends_on": [SIMILARITY],
    "labels": ["finance", "support"],
    "rule": {
        "cases": [{"when": {SIMILARITY: "billing"}, "label": "finance"}],
        "default": "support",
    },
}
ACCOUNT_LABEL = {
    "name": "account",
    "description": "logins, passwords, profiles and account settings",
    "examples": ["I cannot log in", "How do I change my email address?"],
}


@dataclass
class Load:
    """Worker threads posting /classify in a loop, on unique texts."""

    url: str
    requests: list[list[str]] = field(default_factory=lambda: [list(r) for r in BASE_REQUESTS])
    # (status, capabilities asked, body) of every response.
    responses: list[tuple[int, list[str], dict[str, Any]]] = field(default_factory=list)
    iterations: list[int] = field(default_factory=lambda: [0] * WORKERS)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self.work, args=(i,)) for i in range(WORKERS)]
        for thread in self.threads:
            thread.start()

    def finish(self) -> list[tuple[int, list[str], dict[str, Any]]]:
        """Stops the workers once their requests are answered; every response so far."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=300)
        with self.lock:
            return list(self.responses)

    def wait_for(self, what: str, holds: Callable[[dict[str, Any]], bool]) -> None:
        """Waits until a response of the load satisfies `holds`."""
        deadline = time.monotonic() + 180
        while True:
            with self.lock:
                if any(status == 200 and holds(body) for status, _, body in self.responses):
                    return
            assert time.monotonic() < deadline, f"no request of the load {what}"
            time.sleep(0.1)

    def use(self, requests: list[list[str]]) -> None:
        """From the workers' next iteration on, they ask these."""
        with self.lock:
            self.requests = requests

    def drain(self, timeout_s: float = 120.0) -> None:
        """Waits until every worker has started an iteration after this call (so no request of
        the previous `use` is still on its way)."""
        with self.lock:
            marks = list(self.iterations)
        deadline = time.monotonic() + timeout_s
        while any(now <= then for now, then in zip(self.iterations, marks, strict=True)):
            assert time.monotonic() < deadline, "the load workers stopped making progress"
            time.sleep(0.05)

    def work(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=300) as client:
            while not self.stop.is_set():
                with self.lock:
                    self.iterations[worker] += 1
                    options = self.requests
                    caps = options[self.iterations[worker] % len(options)]
                sentence = SENTENCES[self.iterations[worker] % len(SENTENCES)]
                text = f"{sentence} (hot reload load {uuid.uuid4().hex})"
                try:
                    response = client.post(
                        "/classify", json={"texts": [text], "capabilities": caps}
                    )
                    record = (response.status_code, caps, response.json())
                except (httpx.HTTPError, ValueError) as exc:
                    record = (0, caps, {"transport_error": type(exc).__name__})
                with self.lock:
                    self.responses.append(record)


@pytest.fixture
def load(server: LiveServer) -> Iterator[Load]:
    running = Load(server.url)
    running.start()
    try:
        yield running
    finally:
        running.finish()


@pytest.fixture
def folder(server: LiveServer, client: httpx.Client) -> Iterator[Path]:
    """The server's capabilities folder; this test's files are removed and the server reloaded
    afterwards, whatever happened."""
    names = (SIMILARITY, GATE, DRY, BROKEN, ORPHAN)
    yield server.capabilities_dir
    for name in names:
        (server.capabilities_dir / f"{name}.yaml").unlink(missing_ok=True)
    response = client.post("/admin/reload")
    assert response.status_code == 200, response.text
    assert not any(name in listed(client) for name in names)


def write(folder: Path, definition: dict[str, Any]) -> None:
    (folder / f"{definition['name']}.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))


def listed(client: httpx.Client) -> dict[str, str]:
    """Capability name -> version, as GET /capabilities shows the set in force."""
    body = client.get("/capabilities").json()
    return {c["name"]: c["version"] for c in body["capabilities"]}


def reload(client: httpx.Client, dry_run: bool = False) -> httpx.Response:
    params = {"dry_run": "true"} if dry_run else {}
    return client.post("/admin/reload", params=params)


def version_is(version: str) -> Callable[[dict[str, Any]], bool]:
    def holds(body: dict[str, Any]) -> bool:
        result = body["results"][0]["results"].get(SIMILARITY)
        return result is not None and result["version"] == version

    return holds


def classify_fresh(client: httpx.Client, caps: list[str]) -> dict[str, Any]:
    text = f"I was charged twice for one order (hot reload check {uuid.uuid4().hex})"
    response = client.post("/classify", json={"texts": [text], "capabilities": caps})
    assert response.status_code == 200, response.text
    results: dict[str, Any] = response.json()["results"][0]["results"]
    return results


def test_hot_reload_under_load_fails_no_request(
    client: httpx.Client, folder: Path, load: Load
) -> None:
    original = listed(client)
    time.sleep(PHASE_S)

    # A new capability, and a rule over it.
    write(folder, similarity_definition())
    write(folder, GATE_DEFINITION)
    response = reload(client)
    assert response.status_code == 200, response.text
    added = response.json()
    assert added["reloaded"] is True and added["dry_run"] is False
    assert added["added"] == sorted([SIMILARITY, GATE])
    assert added["removed"] == [] and added["changed"] == []
    assert added["unchanged"] == len(original) and added["capabilities"] == len(original) + 2
    first = listed(client)
    results = classify_fresh(client, [SIMILARITY, GATE])
    assert results[SIMILARITY]["version"] == first[SIMILARITY]
    assert set(results[SIMILARITY]["probabilities"]) == {"delivery", "billing"}
    assert results[GATE]["label"] in {"finance", "support"}
    load.use([[SIMILARITY], ["topic", GATE], *load.requests])
    load.wait_for(f"got {SIMILARITY} {first[SIMILARITY]}", version_is(first[SIMILARITY]))
    time.sleep(PHASE_S)

    # A changed definition: the rule over it changes version with it.
    write(folder, similarity_definition(ACCOUNT_LABEL))
    response = reload(client)
    assert response.status_code == 200, response.text
    changed = response.json()
    second = listed(client)
    assert changed["added"] == [] and changed["removed"] == []
    assert changed["changed"] == [
        {"name": name, "old_version": first[name], "new_version": second[name]}
        for name in sorted([SIMILARITY, GATE])
    ]
    assert second[SIMILARITY] != first[SIMILARITY] and second[GATE] != first[GATE]
    results = classify_fresh(client, [SIMILARITY])
    assert results[SIMILARITY]["version"] == second[SIMILARITY]
    assert set(results[SIMILARITY]["probabilities"]) == {"delivery", "billing", "account"}
    load.wait_for(f"got {SIMILARITY} {second[SIMILARITY]}", version_is(second[SIMILARITY]))
    time.sleep(PHASE_S)

    # An invalid set: every problem reported, the set in force keeps serving.
    write(folder, {**similarity_definition(), "name": BROKEN, "model": "no-such-model"})
    write(folder, {**GATE_DEFINITION, "name": ORPHAN, "depends_on": [f"ghost_{SUFFIX}"]})
    response = reload(client)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_capabilities"
    messages = [detail["message"] for detail in error["details"]]
    assert any(f"{BROKEN}.yaml" in m and "unknown model 'no-such-model'" in m for m in messages)
    assert any(
        f"{ORPHAN}.yaml" in m and f"unknown dependency 'ghost_{SUFFIX}'" in m for m in messages
    )
    assert listed(client) == second
    assert classify_fresh(client, [SIMILARITY])[SIMILARITY]["version"] == second[SIMILARITY]
    (folder / f"{BROKEN}.yaml").unlink()
    (folder / f"{ORPHAN}.yaml").unlink()

    # A dry run: checked and compared, nothing swapped.
    write(folder, {**similarity_definition(), "name": DRY})
    response = reload(client, dry_run=True)
    assert response.status_code == 200, response.text
    dry = response.json()
    assert dry["dry_run"] is True and dry["reloaded"] is False
    assert dry["added"] == [DRY] and dry["changed"] == [] and dry["removed"] == []
    assert listed(client) == second
    unknown = client.post("/classify", json={"texts": ["dry run check"], "capabilities": [DRY]})
    assert unknown.status_code == 422 and unknown.json()["error"]["type"] == "unknown_capability"
    (folder / f"{DRY}.yaml").unlink()
    time.sleep(PHASE_S)

    # The removal: once no request for them is on its way, as a client would do it.
    load.use([list(r) for r in BASE_REQUESTS])
    load.drain()
    (folder / f"{SIMILARITY}.yaml").unlink()
    (folder / f"{GATE}.yaml").unlink()
    response = reload(client)
    assert response.status_code == 200, response.text
    assert response.json()["removed"] == sorted([SIMILARITY, GATE])
    assert listed(client) == original
    time.sleep(PHASE_S / 2)

    responses = load.finish()
    failed = [(status, caps, body) for status, caps, body in responses if status != 200]
    assert failed == [], f"{len(failed)} of {len(responses)} requests failed: {failed[:5]}"
    assert len(responses) >= 20
    # The load ran on both versions of the changed capability, and on nothing else.
    seen = {
        body["results"][0]["results"][SIMILARITY]["version"]
        for _, caps, body in responses
        if SIMILARITY in caps
    }
    assert seen == {first[SIMILARITY], second[SIMILARITY]}
