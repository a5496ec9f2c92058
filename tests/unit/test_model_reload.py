"""A reload that adds, replaces or removes models: the bookkeeping of the engines, with
stand-ins for vLLM's AsyncLLM (tests/unit/test_supervisor.py) and for the processors. Which
engines start and stop when, and that windows in flight finish on the engines they began on.
The real engines: tests/integration/test_model_reload.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from capabilities.loader import CapabilityConfigError
from capabilities.spec import CapabilitySpec
from processors.base import ItemOutcome, Processor, ProcessorInput, WindowContext
from processors.engines import Engine, EngineFactory
from processors.model_swap import ModelChanges
from processors.pool import ProcessorPool
from schemas.capability import CapabilityDefinition
from schemas.config import ModelConfig, SupervisorConfig
from server.registry_loading import load_registry
from server.runtime import Runtime
from server.settings import load_config
from tests.unit.conftest import SEED_DAG
from tests.unit.fakes import fake_result
from tests.unit.test_supervisor import StandInLLM

MINILM = {"source": "minilm-src", "runner": "pooling"}
SMOLLM2 = {"source": "smollm2-src", "runner": "generate"}
MOOD = {"name": "mood", "kind": "embedding_similarity", "model": "minilm2", "labels": ["a", "b"]}
QUIET = SupervisorConfig(health_interval_s=60)


class StandInFactory(EngineFactory):
    """Starts stand-in engines; a model named in `failing` fails to start."""

    def __init__(self, failing: Sequence[str] = ()) -> None:
        super().__init__()
        self.failing = set(failing)
        self.llms: dict[str, list[StandInLLM]] = {}

    def launch(
        self, name: str, model: ModelConfig, path: str, env: Mapping[str, str] | None = None
    ) -> StandInLLM:
        if name in self.failing:
            raise OSError("no memory for the engine")
        llm = StandInLLM(self.constructions)
        self.llms.setdefault(name, []).append(llm)
        self.constructions += 1
        return llm


class EngineProcessor:
    """Records which engine each run was on; runs until `gate` is set."""

    kind = "embedding_similarity"

    def __init__(self, engine: Engine, runs: list[Engine], gate: asyncio.Event) -> None:
        self.engine = engine
        self.runs = runs
        self.gate = gate

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        self.runs.append(self.engine)
        await self.gate.wait()
        return [fake_result(spec, item.text) for item in inputs]


class RecordingPool(ProcessorPool):
    """The real pool, with processors that record the engine they ran on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runs: list[Engine] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def _build(self, family: str, engine: Engine, generation: int) -> Processor:
        return EngineProcessor(engine, self.runs, self.gate)


def pool_of(models: dict[str, dict[str, str]], factory: StandInFactory) -> RecordingPool:
    configs = {name: ModelConfig(**model) for name, model in models.items()}  # type: ignore[arg-type]
    return RecordingPool(configs, Path("/models"), factory, supervision=QUIET)


def spec(name: str, model: str) -> CapabilitySpec:
    definition = CapabilityDefinition.model_validate(
        {"name": name, "kind": "embedding_similarity", "model": model, "labels": ["a", "b"]}
    )
    return CapabilitySpec.from_definition(definition, Path(f"{name}.yaml"))


def engine_of(processor: Processor) -> Engine:
    assert isinstance(processor, EngineProcessor)
    return processor.engine


def test_model_changes_name_added_replaced_and_removed_models():
    old = {
        "a": ModelConfig(source="x", runner="pooling"),
        "b": ModelConfig(source="y", runner="pooling"),
    }
    new = {
        "b": ModelConfig(source="y", runner="pooling", max_num_seqs=4),
        "c": ModelConfig(source="z", runner="pooling"),
    }
    changes = ModelChanges.between(old, new)
    assert (changes.added, changes.replaced, changes.removed) == (("c",), ("b",), ("a",))
    assert changes.to_start == ("b", "c") and changes.any
    assert not ModelChanges.between(old, dict(old)).any


async def test_a_changed_model_starts_beside_the_old_and_old_sets_keep_the_old_engine():
    factory = StandInFactory()
    pool = pool_of({"minilm": MINILM}, factory)
    await pool.start()
    old_set = pool.bound()
    old_engine = pool.engines["minilm"]

    started = await pool.start_models({"minilm": ModelConfig(**{**MINILM, "max_num_seqs": 4})})  # type: ignore[arg-type]
    assert factory.constructions == 2
    assert pool.engines["minilm"] is old_engine  # nothing in service before install
    retired = pool.install(started)
    new_engine = pool.engines["minilm"]
    assert new_engine is not old_engine and pool.retired == retired

    assert engine_of(old_set.processor_for(spec("c", "minilm"))) is old_engine
    assert engine_of(pool.bound().processor_for(spec("c", "minilm"))) is new_engine
    assert pool.engine_states()["minilm"].state == "ready"
    assert factory.llms["minilm"][0].shutdowns == 0

    await pool.close_retired(retired)
    assert factory.llms["minilm"][0].shutdowns == 1
    assert factory.llms["minilm"][1].shutdowns == 0
    assert pool.retired == []
    with pytest.raises(LookupError):
        old_set.processor_for(spec("c", "minilm"))
    pool.stop()


async def test_a_failed_start_stops_the_engines_it_started_and_changes_nothing():
    factory = StandInFactory(failing=["minilm3"])
    pool = pool_of({"minilm": MINILM}, factory)
    await pool.start()
    models = {name: ModelConfig(**MINILM) for name in ("minilm", "minilm2", "minilm3")}  # type: ignore[arg-type]
    with pytest.raises(OSError):
        await pool.start_models(models)
    assert factory.llms["minilm2"][0].shutdowns == 1  # the half-done reload left nothing running
    assert set(pool.engines) == {"minilm"} and set(pool.models) == {"minilm"}
    assert set(pool.engine_states()) == {"minilm"}
    pool.stop()


async def test_a_removed_model_leaves_service_and_stop_closes_retired_engines():
    factory = StandInFactory()
    pool = pool_of({"minilm": MINILM, "smollm2": SMOLLM2}, factory)
    await pool.start()
    old_set = pool.bound()
    started = await pool.start_models({"minilm": ModelConfig(**MINILM)})  # type: ignore[arg-type]
    assert started.engines == {}  # nothing to start for a removal
    retired = pool.install(started)
    assert retired == [("smollm2", 0)]
    assert set(pool.engine_states()) == {"minilm"}
    with pytest.raises(LookupError):
        pool.bound().processor_for(spec("c", "smollm2"))
    assert engine_of(old_set.processor_for(spec("c", "smollm2"))).name == "smollm2"
    pool.stop()  # the retired engine, not closed yet, is stopped with the rest
    assert factory.llms["smollm2"][0].shutdowns == 1
    assert factory.llms["minilm"][0].shutdowns == 1


class Setup:
    """A runtime on a RecordingPool, configured by a file that tests rewrite."""

    def __init__(self, tmp_path: Path, grace_s: float = 30.0) -> None:
        self.caps = tmp_path / "caps"
        self.caps.mkdir()
        self.path = tmp_path / "capserve.yaml"
        self.grace_s = grace_s
        self.write_caps(*SEED_DAG)
        self.write_models({"minilm": MINILM, "smollm2": SMOLLM2})
        self.factory = StandInFactory()
        config = load_config(self.path, {})
        self.pool = pool_of({k: v.model_dump() for k, v in config.models.items()}, self.factory)
        self.runtime = Runtime(config, load_registry(config), self.pool, config_path=self.path)

    def write_caps(self, *definitions: Any) -> None:
        for definition in definitions:
            (self.caps / f"{definition['name']}.yaml").write_text(yaml.safe_dump(definition))

    def write_models(self, models: dict[str, Any], **sections: Any) -> None:
        config = {
            "models": models,
            "capabilities_dir": str(self.caps),
            "models_dir": str(self.caps.parent / "models"),
            "server": {"warmup": False, "shutdown_grace_s": self.grace_s},
            "batching": {"window_ms": 5},
            **sections,
        }
        self.path.write_text(yaml.safe_dump(config))


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_reload_adds_a_model_and_the_capability_using_it(tmp_path: Path):
    setup = Setup(tmp_path)
    runtime = setup.runtime
    await runtime.start()
    setup.write_caps(MOOD)
    # Without the model, the capability is refused and nothing starts.
    with pytest.raises(CapabilityConfigError):
        await runtime.reload()
    assert setup.factory.constructions == 2

    setup.write_models({"minilm": MINILM, "smollm2": SMOLLM2, "minilm2": MINILM})
    dry = await runtime.reload(dry_run=True)
    assert dry.models.added == ("minilm2",) and setup.factory.constructions == 2
    report = await runtime.reload()
    assert report.models.added == ("minilm2",) and report.changes.added == ("mood",)
    assert setup.factory.constructions == 3
    assert runtime.pool.engine_constructions == 3
    assert runtime.pool.engine_states()["minilm2"].up
    result = await runtime.classify(["hello"], ["mood"])
    assert result.per_text[0]["mood"].label in ("a", "b")
    assert [engine.name for engine in setup.pool.runs] == ["minilm2"]
    await runtime.stop()


async def test_windows_in_flight_finish_on_the_old_engine_which_closes_after_them(tmp_path: Path):
    setup = Setup(tmp_path)
    runtime, pool = setup.runtime, setup.pool
    await runtime.start()
    old_engine = pool.engines["minilm"]
    pool.gate.clear()
    in_flight = asyncio.create_task(runtime.classify(["old"], ["classification"]))
    await _until(lambda: len(pool.runs) == 1)

    setup.write_models({"minilm": {**MINILM, "max_model_len": 128}, "smollm2": SMOLLM2})
    old_versions = runtime.capability_set.versions()
    report = await runtime.reload()
    assert report.models.replaced == ("minilm",)
    new_versions = runtime.capability_set.versions()
    assert new_versions["classification"] != old_versions["classification"]
    assert pool.engines["minilm"] is not old_engine

    await asyncio.sleep(0.3)
    old_llm, new_llm = setup.factory.llms["minilm"]
    assert old_llm.shutdowns == 0  # the window on it still runs
    pool.gate.set()
    await in_flight
    assert pool.runs[0] is old_engine
    await _until(lambda: old_llm.shutdowns == 1)
    assert runtime.pool.engine_states()["minilm"].up

    await runtime.classify(["new"], ["classification"])
    assert pool.runs[-1] is pool.engines["minilm"] and new_llm.shutdowns == 0
    await runtime.stop()
    assert new_llm.shutdowns == 1


async def test_the_old_engine_closes_after_the_grace_even_if_a_window_holds_it(tmp_path: Path):
    setup = Setup(tmp_path, grace_s=0.2)
    runtime, pool = setup.runtime, setup.pool
    await runtime.start()
    pool.gate.clear()
    in_flight = asyncio.create_task(runtime.classify(["old"], ["classification"]))
    await _until(lambda: len(pool.runs) == 1)
    setup.write_models({"minilm": {**MINILM, "source": "other"}, "smollm2": SMOLLM2})
    await runtime.reload()
    await _until(lambda: setup.factory.llms["minilm"][0].shutdowns == 1)
    assert not in_flight.done()
    pool.gate.set()
    await in_flight
    await runtime.stop()


async def test_a_removed_model_is_closed_after_the_swap(tmp_path: Path):
    setup = Setup(tmp_path)
    runtime = setup.runtime
    await runtime.start()
    setup.write_models({"minilm": MINILM})  # no capability uses smollm2
    report = await runtime.reload()
    assert report.models.removed == ("smollm2",)
    assert set(runtime.pool.engine_states()) == {"minilm"}
    await _until(lambda: setup.factory.llms["smollm2"][0].shutdowns == 1)
    assert runtime.config.models.keys() == {"minilm"}
    await runtime.stop()


async def test_an_engine_that_fails_to_start_fails_the_reload_and_changes_nothing(tmp_path: Path):
    setup = Setup(tmp_path)
    runtime = setup.runtime
    await runtime.start()
    before = runtime.capability_set
    setup.factory.failing = {"minilm"}
    setup.write_models({"minilm": {**MINILM, "max_model_len": 128}, "smollm2": SMOLLM2})
    with pytest.raises(CapabilityConfigError) as raised:
        await runtime.reload()
    assert "OSError" in raised.value.problems[0] and "no memory" not in raised.value.problems[0]
    assert runtime.capability_set is before
    assert runtime.config.models["minilm"].max_num_seqs is None
    assert runtime.pool.engine_states()["minilm"].up
    await runtime.stop()


async def test_an_invalid_config_file_is_a_problem_of_the_reload(tmp_path: Path):
    setup = Setup(tmp_path)
    runtime = setup.runtime
    await runtime.start()
    setup.write_models({"minilm": {"source": "x", "runner": "nonsense"}, "smollm2": SMOLLM2})
    for dry_run in (True, False):
        with pytest.raises(CapabilityConfigError) as raised:
            await runtime.reload(dry_run=dry_run)
        assert "models.minilm.runner" in raised.value.problems[0]
    assert setup.factory.constructions == 2
    await runtime.stop()


async def test_sections_a_reload_does_not_apply_are_reported(tmp_path: Path):
    setup = Setup(tmp_path)
    runtime = setup.runtime
    runtime.config.server.port = 9999  # as `capserve serve --port` sets it: not a file change
    setup.write_models({"minilm": MINILM, "smollm2": SMOLLM2}, batching={"window_ms": 50})
    report = await runtime.reload(dry_run=True)
    assert report.restart_required == ("batching",)
    assert not report.models.any


async def test_the_health_watch_leaves_alone_an_engine_a_reload_replaced():
    factory = StandInFactory()
    configs = {"minilm": ModelConfig(**MINILM)}  # type: ignore[arg-type]
    fast = SupervisorConfig(health_interval_s=0.02, restart_backoff_s=0.05)
    pool = RecordingPool(configs, Path("/models"), factory, supervision=fast)
    await pool.start()
    started = await pool.start_models({"minilm": ModelConfig(**{**MINILM, "max_num_seqs": 4})})  # type: ignore[arg-type]
    retired = pool.install(started)
    factory.llms["minilm"][0].die()  # the retired engine dies before it is closed
    await asyncio.sleep(0.2)
    assert pool.engine_states()["minilm"].state == "ready"
    assert pool.engine_states()["minilm"].restarts == 0
    assert pool.engines["minilm"].serving
    await pool.close_retired(retired)
    factory.llms["minilm"][1].die()  # the engine in service is still watched and restarted
    await _until(lambda: pool.engine_states()["minilm"].restarts == 1)
    pool.stop()
