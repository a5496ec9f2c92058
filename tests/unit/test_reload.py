"""Hot reload of the capability set, in process with the fake processors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from fastapi.testclient import TestClient

from capabilities.loader import CapabilityConfigError
from capabilities.registry import CapabilityRegistry, UnknownCapabilityError
from schemas.config import (
    BatchingConfig,
    CacheConfig,
    CapServeConfig,
    ModelConfig,
    ServerConfig,
)
from server import runtime as runtime_module
from server.api.app import create_app
from server.execution import capability_watch
from server.execution.capability_set import load_servable_registry
from server.registry_loading import load_registry
from server.runtime import WARMUP_TEXT, Runtime
from tests.unit.conftest import SEED_DAG
from tests.unit.fakes import FakePool, FakeProcessor

SEED = cast(list[dict[str, Any]], SEED_DAG)
CLASSIFICATION, RECOMMENDATIONS, ALERTS = SEED
EXTRA = {
    "name": "mood",
    "kind": "embedding_similarity",
    "model": "minilm",
    "labels": ["calm", "upset"],
}


class Folder:
    """The capabilities folder the runtime reads: one file per capability, named after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()

    def write(self, *definitions: dict[str, Any]) -> None:
        for definition in definitions:
            (self.path / f"{definition['name']}.yaml").write_text(yaml.safe_dump(definition))

    def remove(self, name: str) -> None:
        (self.path / f"{name}.yaml").unlink()

    def write_raw(self, name: str, text: str) -> None:
        (self.path / f"{name}.yaml").write_text(text)


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    caps = Folder(tmp_path / "caps")
    caps.write(*SEED)
    return caps


def config_for(folder: Folder, **batching: Any) -> CapServeConfig:
    return CapServeConfig(
        models={
            "minilm": ModelConfig(source="x", runner="pooling"),
            "smollm2": ModelConfig(source="y", runner="generate"),
        },
        capabilities_dir=folder.path,
        batching=BatchingConfig(**{"window_ms": 10, **batching}),
        server=ServerConfig(warmup=False),
    )


def runtime_for(
    folder: Folder, pool: FakePool | None = None, config: CapServeConfig | None = None
) -> Runtime:
    config = config or config_for(folder)
    return Runtime(config, load_registry(config), pool or FakePool())


def relabelled(definition: dict[str, Any], *labels: str) -> dict[str, Any]:
    return {**definition, "labels": list(labels)}


async def wait_until_running(pool: FakePool, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while pool.processor.running == 0:
        assert time.monotonic() < deadline, "the window never reached the processor"
        await asyncio.sleep(0.005)


async def test_a_reload_puts_the_new_set_in_force_and_reports_the_changes(folder: Folder):
    runtime = runtime_for(folder)
    before = await runtime.classify(["one"], ["classification", "alerts"])
    old_versions = runtime.capability_set.versions()
    folder.write(relabelled(CLASSIFICATION, "question", "complaint", "request", "praise"), EXTRA)
    folder.remove("recommendations")

    report = await runtime.reload()

    assert report.reloaded and not report.dry_run and report.capabilities == 3
    changes = report.changes
    assert changes.added == ("mood",) and changes.removed == ("recommendations",)
    # alerts depends on classification: its version changes with it.
    assert [c.name for c in changes.changed] == ["alerts", "classification"]
    assert all(c.old_version == old_versions[c.name] for c in changes.changed)
    assert all(c.new_version != c.old_version for c in changes.changed)
    assert changes.unchanged == 0
    assert runtime.registry.names() == ["alerts", "classification", "mood"]
    after = await runtime.classify(["one"], ["classification", "mood"])
    new_versions = runtime.capability_set.versions()
    assert after.per_text[0]["classification"].version == new_versions["classification"]
    assert after.per_text[0]["classification"].version != (
        before.per_text[0]["classification"].version
    )
    assert "praise" in after.per_text[0]["classification"].probabilities
    assert after.per_text[0]["mood"].label in {"calm", "upset"}
    with pytest.raises(UnknownCapabilityError):
        await runtime.classify(["one"], ["recommendations"])


async def test_a_window_in_flight_finishes_on_the_old_set_while_a_new_request_gets_the_new(
    folder: Folder,
):
    pool = FakePool(FakeProcessor(delay=0.3))
    runtime = runtime_for(folder, pool)
    old_version = runtime.capability_set.versions()["classification"]
    in_flight = asyncio.create_task(runtime.classify(["first"], ["classification", "alerts"]))
    await wait_until_running(pool)
    folder.write(relabelled(CLASSIFICATION, "question", "complaint", "praise"))

    await runtime.reload()
    new_version = runtime.capability_set.versions()["classification"]
    fresh = await runtime.classify(["second"], ["classification"])
    old = await in_flight

    assert new_version != old_version
    assert old.per_text[0]["classification"].version == old_version
    assert set(old.per_text[0]["classification"].probabilities) == {
        "question",
        "complaint",
        "request",
    }
    assert old.per_text[0]["alerts"].label in {"alert", "none"}
    assert fresh.per_text[0]["classification"].version == new_version
    assert set(fresh.per_text[0]["classification"].probabilities) == {
        "question",
        "complaint",
        "praise",
    }
    assert old.window is not None and fresh.window is not None
    assert old.window.id != fresh.window.id


async def test_requests_of_two_sets_in_one_gathering_period_run_as_separate_windows(
    folder: Folder,
):
    # Fixed windows of 300 ms: without the set boundary both requests would share one window.
    pool = FakePool()
    runtime = runtime_for(folder, pool, config_for(folder, adaptive=False, window_ms=300))
    first = asyncio.create_task(runtime.classify(["a"], ["classification"]))
    await asyncio.sleep(0.02)
    folder.write(relabelled(CLASSIFICATION, "question", "complaint", "praise"))
    await runtime.reload()
    second = asyncio.create_task(runtime.classify(["b"], ["classification"]))
    old, new = await first, await second

    assert old.window is not None and new.window is not None
    assert old.window.id != new.window.id
    assert old.window.requests == 1 and new.window.requests == 1
    versions = {r.per_text[0]["classification"].version for r in (old, new)}
    assert len(versions) == 2
    calls = pool.executions("classification")
    assert sorted(c.texts for c in calls) == [("a",), ("b",)]


async def test_a_request_accepted_before_its_capability_was_removed_still_gets_its_answer(
    folder: Folder,
):
    runtime = runtime_for(folder, config=config_for(folder, adaptive=False, window_ms=200))
    gathering = asyncio.create_task(runtime.classify(["kept"], ["alerts"]))
    await asyncio.sleep(0.02)  # accepted: waiting in the open window
    folder.remove("alerts")
    report = await runtime.reload()

    assert report.changes.removed == ("alerts",)
    result = await gathering
    assert result.per_text[0]["alerts"].label in {"alert", "none"}
    with pytest.raises(UnknownCapabilityError, match="'alerts'"):
        await runtime.classify(["kept"], ["alerts"])


async def test_a_running_window_of_a_removed_capability_finishes(folder: Folder):
    pool = FakePool(FakeProcessor(delay=0.2))
    runtime = runtime_for(folder, pool)
    running = asyncio.create_task(runtime.classify(["x"], ["recommendations"]))
    await wait_until_running(pool)
    folder.remove("recommendations")
    await runtime.reload()
    result = await running
    assert result.per_text[0]["recommendations"].label in {"faq", "agent"}


async def test_an_invalid_set_changes_nothing_and_reports_every_problem(folder: Folder):
    runtime = runtime_for(folder)
    before = runtime.capability_set
    folder.write({**EXTRA, "model": "no-such-model"})
    folder.write({**ALERTS, "depends_on": ["classification", "ghost"]})

    with pytest.raises(CapabilityConfigError) as caught:
        await runtime.reload()

    problems = caught.value.problems
    assert len(problems) == 2
    assert any("unknown model 'no-such-model'" in p for p in problems)
    assert any("unknown dependency 'ghost'" in p for p in problems)
    assert runtime.capability_set is before
    result = await runtime.classify(["still served"], ["alerts"])
    assert result.per_text[0]["alerts"].version == before.versions()["alerts"]


async def test_a_dry_run_validates_and_reports_without_swapping(folder: Folder):
    runtime = runtime_for(folder)
    before = runtime.capability_set
    folder.write(EXTRA)

    report = await runtime.reload(dry_run=True)

    assert report.dry_run and not report.reloaded
    assert report.changes.added == ("mood",) and report.capabilities == 4
    assert runtime.capability_set is before
    with pytest.raises(UnknownCapabilityError):
        await runtime.classify(["t"], ["mood"])
    folder.write_raw("broken", "name: [unclosed")
    with pytest.raises(CapabilityConfigError, match="not valid YAML"):
        await runtime.reload(dry_run=True)
    assert runtime.capability_set is before


async def test_concurrent_reloads_run_one_at_a_time(
    folder: Folder, monkeypatch: pytest.MonkeyPatch
):
    runtime = runtime_for(folder)
    inside = 0
    most_inside = 0
    guard = threading.Lock()

    def slow_load(config: CapServeConfig) -> CapabilityRegistry:
        nonlocal inside, most_inside
        with guard:
            inside += 1
            most_inside = max(most_inside, inside)
        time.sleep(0.05)
        try:
            return load_servable_registry(config)
        finally:
            with guard:
                inside -= 1

    monkeypatch.setattr(runtime_module, "load_servable_registry", slow_load)
    folder.write(EXTRA)
    reports = await asyncio.gather(*(runtime.reload() for _ in range(3)))

    assert most_inside == 1
    assert runtime.capability_set.generation == 4
    # Each reload compared against the set the one before it left: only the first saw `mood`.
    assert sorted(len(r.changes.added) for r in reports) == [0, 0, 1]


async def test_cache_keys_follow_the_set_of_the_request(folder: Folder):
    pool = FakePool()
    config = config_for(folder).model_copy(update={"cache": CacheConfig(enabled=True)})
    runtime = runtime_for(folder, pool, config)
    await runtime.classify(["cached"], ["classification"])
    folder.write(EXTRA)  # classification itself does not change
    await runtime.reload()

    again = await runtime.classify(["cached"], ["classification"])
    assert again.from_cache  # same version: the result cached under the old set still serves

    folder.write(relabelled(CLASSIFICATION, "question", "complaint", "praise"))
    await runtime.reload()
    changed = await runtime.classify(["cached"], ["classification"])
    assert not changed.from_cache
    assert (
        changed.per_text[0]["classification"].version
        == (runtime.capability_set.versions()["classification"])
    )
    assert len(pool.executions("classification")) == 2


async def test_a_reload_that_drops_a_capability_the_cache_excludes_is_refused(folder: Folder):
    config = config_for(folder).model_copy(
        update={"cache": CacheConfig(enabled=True, exclude=["alerts"])}
    )
    runtime = runtime_for(folder, config=config)
    folder.remove("alerts")
    with pytest.raises(CapabilityConfigError, match=r"cache\.exclude: unknown capability"):
        await runtime.reload()
    assert "alerts" in runtime.registry.names()


async def test_changed_capabilities_warm_up_in_the_background(folder: Folder):
    pool = FakePool()
    config = config_for(folder).model_copy(update={"server": ServerConfig(warmup=True)})
    runtime = runtime_for(folder, pool, config)
    await runtime.start()
    pool.processor.delay = 0.5
    pool.processor.fail_on = {"mood"}  # a failing warm-up fails nothing else
    folder.write(EXTRA)

    started = time.monotonic()
    await runtime.reload()
    assert time.monotonic() - started < 0.4  # the reload did not wait for the warm-up
    await wait_until_running(pool)
    await runtime.stop()  # does not wait for the warm-up: it is cancelled

    warm_ups = [c for c in pool.executions("mood") if c.texts == (WARMUP_TEXT,)]
    assert len(warm_ups) == 1
    assert runtime.stats.snapshot()["windows"] == 0  # outside the stats


# --- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def client(folder: Folder) -> Iterator[TestClient]:
    with TestClient(create_app(runtime_for(folder))) as c:
        yield c


def test_post_admin_reload_answers_with_the_changes(client: TestClient, folder: Folder):
    old = {c["name"]: c["version"] for c in client.get("/capabilities").json()["capabilities"]}
    folder.write(EXTRA, {**ALERTS, "description": "complaints raise an alert"})
    folder.remove("recommendations")

    response = client.post("/admin/reload")

    assert response.status_code == 200
    body = response.json()
    new = {c["name"]: c["version"] for c in client.get("/capabilities").json()["capabilities"]}
    assert body == {
        "reloaded": True,
        "dry_run": False,
        "capabilities": 3,
        "added": ["mood"],
        "removed": ["recommendations"],
        "changed": [{"name": "alerts", "old_version": old["alerts"], "new_version": new["alerts"]}],
        "unchanged": 1,
        "models": {"added": [], "replaced": [], "removed": []},
        "restart_required": [],
    }
    assert sorted(new) == ["alerts", "classification", "mood"]
    answer = client.post("/classify", json={"texts": ["hi"], "capabilities": ["mood", "alerts"]})
    assert answer.status_code == 200
    results = answer.json()["results"][0]["results"]
    assert results["mood"]["version"] == new["mood"]
    assert results["alerts"]["label"] in {"alert", "none"}


def test_post_admin_reload_dry_run_changes_nothing(client: TestClient, folder: Folder):
    listed = client.get("/capabilities").json()
    folder.write(EXTRA)
    response = client.post("/admin/reload", params={"dry_run": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["dry_run"] is True and body["reloaded"] is False and body["added"] == ["mood"]
    assert client.get("/capabilities").json() == listed


def test_an_invalid_set_is_a_422_with_one_detail_per_problem(client: TestClient, folder: Folder):
    listed = client.get("/capabilities").json()
    folder.write({**EXTRA, "model": "no-such-model"}, {**EXTRA, "name": "mood2", "labels": []})
    folder.write({**ALERTS, "depends_on": ["ghost"]})

    response = client.post("/admin/reload")

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_capabilities"
    messages = [d["message"] for d in error["details"]]
    assert len(messages) >= 3
    assert any("mood.yaml" in m and "no-such-model" in m for m in messages)
    assert any("mood2.yaml" in m for m in messages)
    assert any("alerts.yaml" in m and "ghost" in m for m in messages)
    assert f"{len(messages)} problem" in error["message"]
    assert client.get("/capabilities").json() == listed
    answer = client.post("/classify", json={"texts": ["hi"], "capabilities": ["alerts"]})
    assert answer.status_code == 200


# --- the folder watch (server.watch_capabilities) ----------------------------------------------


async def wait_for_names(runtime: Runtime, names: list[str], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while runtime.registry.names() != names:
        assert time.monotonic() < deadline, f"the set in force is {runtime.registry.names()}"
        await asyncio.sleep(0.01)


async def test_the_watch_reloads_a_changed_folder(
    folder: Folder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(capability_watch, "WATCH_INTERVAL_S", 0.02)
    config = config_for(folder).model_copy(
        update={"server": ServerConfig(warmup=False, watch_capabilities=True)}
    )
    runtime = runtime_for(folder, config=config)
    await runtime.start()
    try:
        folder.write(EXTRA)
        await wait_for_names(runtime, ["alerts", "classification", "mood", "recommendations"])
        assert runtime.capability_set.generation == 2

        folder.write({**EXTRA, "model": "no-such-model"})
        await asyncio.sleep(0.3)  # many polls: one failed reload, and no swap
        assert runtime.capability_set.generation == 2
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "unknown model 'no-such-model'" in errors[0].getMessage()

        folder.remove("mood")
        await wait_for_names(runtime, ["alerts", "classification", "recommendations"])
        assert runtime.capability_set.generation == 3
    finally:
        await runtime.stop()


async def test_without_the_setting_nothing_watches(folder: Folder, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(capability_watch, "WATCH_INTERVAL_S", 0.02)
    runtime = runtime_for(folder)
    await runtime.start()
    folder.write(EXTRA)
    await asyncio.sleep(0.2)
    assert "mood" not in runtime.registry.names()
    await runtime.stop()


def test_the_watch_is_off_by_default():
    assert ServerConfig().watch_capabilities is False
    shipped = yaml.safe_load((Path(__file__).parents[2] / "configs/default.yaml").read_text())
    assert shipped["server"]["watch_capabilities"] is False
