"""ProcessorPool: owns the engines (one per configured model) and hands out the processor that
runs a capability.

A reload can add, replace or remove models (`start_models`, `install`, `close_retired`): each
engine is one generation of its model, and a capability set runs on the generations in
service when it was built (`bound`), so a window in flight finishes on the engines it began on.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from capabilities.spec import CapabilitySpec
from processors.base import Processor
from processors.classifier import ClassifierProcessor
from processors.embedding_head import EmbeddingHeadProcessor
from processors.embedding_similarity import EmbeddingSimilarityProcessor
from processors.engine_status import EngineStatus, EngineWork
from processors.engines import Engine, EngineFactory
from processors.formula import FormulaProcessor
from processors.json_output import JsonOutputProcessor
from processors.model_store import resolve_model_path
from processors.model_swap import BoundProcessors, EngineKey, ModelChanges, StartedEngines
from processors.placement import ReplicaPlacement, available_cpu_cores, place_model
from processors.precision import detect_hardware
from processors.questions.processor import LLMQuestionProcessor
from processors.regex import RegexProcessor
from processors.rule import RuleProcessor
from processors.supervisor import EngineSpec, EngineSupervisor
from processors.taxonomy import TaxonomyProcessor
from schemas.capability import HEAD_KINDS
from schemas.config import ModelConfig, PromptingConfig, SupervisorConfig

log = logging.getLogger(__name__)


class ProcessorPool:
    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        models_dir: Path,
        factory: EngineFactory | None = None,
        prompting: PromptingConfig | None = None,
        supervision: SupervisorConfig | None = None,
        on_engines_started: Callable[[], None] | None = None,
    ) -> None:
        """`on_engines_started` is called after every engine start and restart (e.g. to feed
        the engine processes to the reaper)."""
        self._models = dict(models)
        self._prompting = prompting or PromptingConfig()
        self._models_dir = models_dir
        self.factory = factory or EngineFactory()
        self._supervision = supervision or SupervisorConfig()
        self._on_engines_started = on_engines_started
        self.supervisor: EngineSupervisor | None = None
        # Processors by (family, model, engine generation).
        self._processors: dict[tuple[str, str, int], Processor] = {}
        self._generation_numbers = itertools.count(1)
        # The generation of each model's engine in service.
        self._generations = {name: 0 for name in self._models}
        # Engines a reload took out of service, until close_retired closes them.
        self._retired: dict[EngineKey, Engine] = {}
        # Kinds that use no model: one processor each.
        self._modelless: dict[str, Processor] = {
            "rule": RuleProcessor(),
            "regex": RegexProcessor(),
            "formula": FormulaProcessor(),
        }

    @property
    def engine_constructions(self) -> int:
        return self.factory.constructions

    @property
    def models(self) -> dict[str, ModelConfig]:
        """The models in service."""
        return dict(self._models)

    def check_models(self, models: Mapping[str, ModelConfig] | None = None) -> dict[str, str]:
        """Resolves the path of every model (default: those in service) and places its
        replicas; raises ModelNotReadyError or PlacementError before any engine starts."""
        chosen = self._models if models is None else models
        for name, model in chosen.items():
            self._placement(name, model)
        return {
            name: resolve_model_path(name, model.source, self._models_dir)
            for name, model in chosen.items()
        }

    def _placement(self, name: str, model: ModelConfig) -> list[ReplicaPlacement]:
        """Where each replica of `model` runs (cores or GPUs of this machine)."""
        hardware = detect_hardware()
        return place_model(
            name, model, hardware.target, available_cpu_cores(), len(hardware.gpu_capabilities)
        )

    def _spec(self, name: str, model: ModelConfig, path: str) -> EngineSpec:
        envs = tuple(placement.env for placement in self._placement(name, model))
        return EngineSpec(name, model, path, envs)

    def bound(self) -> BoundProcessors:
        """The processors on the engines in service now, whatever a later reload swaps in."""
        return BoundProcessors(self, self._generations)

    async def start_models(self, models: Mapping[str, ModelConfig]) -> StartedEngines:
        """Starts an engine, beside those in service, for each model of `models` that is new or
        configured otherwise than in service, off the event loop and one after the other;
        nothing is in service until `install`. A failed start raises, and the engines it
        started are stopped."""
        changes = ModelChanges.between(self._models, models)
        paths = self.check_models({name: models[name] for name in changes.to_start})
        started: dict[str, tuple[EngineSpec, Engine]] = {}
        if changes.to_start and self.supervisor is None:
            raise RuntimeError("the engines are not started yet")
        try:
            for name in changes.to_start:
                assert self.supervisor is not None
                spec = self._spec(name, models[name], paths[name])
                started[name] = (spec, await self.supervisor.launch_spare(spec))
        except BaseException:
            await self.discard(StartedEngines(dict(models), changes, started))
            raise
        return StartedEngines(dict(models), changes, started)

    async def discard(self, started: StartedEngines) -> None:
        """Stops the engines of `start_models` that were not installed."""
        assert self.supervisor is not None or not started.engines
        for _spec, engine in started.engines.values():
            assert self.supervisor is not None
            await self.supervisor.close_retired(engine)

    def install(self, started: StartedEngines) -> list[EngineKey]:
        """Puts the started engines in service, in one step (no await), and takes the removed
        models' engines out; returns the engines now retired, for `close_retired` once the
        capability sets bound to them are done."""
        retired: list[EngineKey] = []
        supervisor = self.supervisor
        for name, (spec, engine) in started.engines.items():
            assert supervisor is not None
            old = supervisor.install(spec, engine)
            if old is not None:
                retired.append(self._retire(name, old))
            self._generations[name] = next(self._generation_numbers)
        for name in started.changes.removed:
            old = None if supervisor is None else supervisor.withdraw(name)
            if old is not None:
                retired.append(self._retire(name, old))
            self._generations.pop(name, None)
        self._models = dict(started.models)
        return retired

    def _retire(self, name: str, engine: Engine) -> EngineKey:
        key = (name, self._generations[name])
        self._retired[key] = engine
        return key

    async def close_retired(self, keys: Iterable[EngineKey]) -> None:
        """Closes retired engines (off the event loop) and forgets their processors."""
        for key in keys:
            engine = self._retired.pop(key, None)
            for processor_key in [k for k in self._processors if k[1:] == key]:
                del self._processors[processor_key]
            if engine is not None and self.supervisor is not None:
                await self.supervisor.close_retired(engine)

    @property
    def retired(self) -> list[EngineKey]:
        """Engines out of service and not closed yet."""
        return sorted(self._retired)

    @property
    def engines(self) -> dict[str, Engine]:
        return {} if self.supervisor is None else self.supervisor.engines

    async def start(self) -> None:
        """Starts every engine once, off the event loop, under the supervisor, which restarts
        an engine that dies."""
        paths = self.check_models()
        specs = {name: self._spec(name, model, paths[name]) for name, model in self._models.items()}
        self.supervisor = EngineSupervisor(
            specs, self.factory, self._supervision, self._on_engines_started
        )
        try:
            await self.supervisor.start()
        except BaseException:
            self.stop()  # the engines that did start are not left running
            raise
        log.info("processor pool ready: %d engine(s)", len(self.engines))

    def stop(self) -> None:
        """Stops the supervisor and every engine (blocking; callable from any thread)."""
        if self.supervisor is not None:
            self.supervisor.stop()
        self._processors.clear()

    async def health(self) -> dict[str, str]:
        """Each engine's state ("ok" when ready and serving)."""
        return {
            name: "ok" if status.up else status.state
            for name, status in self.engine_states().items()
        }

    def engine_states(self) -> dict[str, EngineStatus]:
        """Every configured model's engine: its state and restart count."""
        if self.supervisor is None:
            return {name: EngineStatus(name, "starting") for name in self._models}
        return self.supervisor.states()

    def work(self) -> dict[str, EngineWork]:
        return {name: engine.work for name, engine in self.engines.items()}

    def replica_states(self) -> dict[str, list[EngineStatus]]:
        """Every replica's state, by model."""
        if self.supervisor is None:
            return {
                name: [EngineStatus(name, "starting", replica=i) for i in range(model.replicas)]
                for name, model in self._models.items()
            }
        return self.supervisor.replica_states()

    def replica_work(self) -> dict[str, list[EngineWork]]:
        """The work sent to each replica, by model (replica number = list index)."""
        return {name: [r.work for r in engine.replicas] for name, engine in self.engines.items()}

    def processor_for(self, spec: CapabilitySpec) -> Processor:
        """The processor of `spec` on the engines in service now."""
        return self.processor_on(spec, self._generations)

    def processor_on(self, spec: CapabilitySpec, generations: Mapping[str, int]) -> Processor:
        """The processor of `spec` on the engine generations `generations`."""
        if spec.kind in self._modelless:
            return self._modelless[spec.kind]
        engine = None
        if spec.model is not None and spec.model in generations:
            engine = self._engine(spec.model, generations[spec.model])
        if spec.model is None or engine is None:
            raise LookupError(f"capability '{spec.name}': model '{spec.model}' has no engine")
        generation = generations[spec.model]
        if spec.is_question:
            # One question processor per engine answers every LLM question kind on it, so
            # that all the questions about a text can share its prefill.
            return self._processor("llm_question", engine, generation)
        if spec.kind == "embedding_similarity" and any(lb.children for lb in spec.labels):
            return self._processor("taxonomy", engine, generation)
        if spec.kind in HEAD_KINDS:  # one head processor for either kind of head
            return self._processor("embedding_head", engine, generation)
        return self._processor(spec.kind, engine, generation)

    def _engine(self, model: str, generation: int) -> Engine | None:
        if self._generations.get(model) == generation:
            return self.engines.get(model)
        return self._retired.get((model, generation))

    def _processor(self, family: str, engine: Engine, generation: int) -> Processor:
        key = (family, engine.name, generation)
        processor = self._processors.get(key)
        if processor is None:
            processor = self._build(family, engine, generation)
            self._processors[key] = processor
        return processor

    def _build(self, family: str, engine: Engine, generation: int) -> Processor:
        if family == "llm_question":
            return LLMQuestionProcessor(engine, self._prompting.max_tokens_in_flight)
        if family == "llm_json":
            return JsonOutputProcessor(engine)
        if family == "classifier":
            return ClassifierProcessor(engine)
        if family == "embedding_similarity":
            return EmbeddingSimilarityProcessor(engine)
        # These read the text embeddings the window's embedding_similarity capabilities share.
        similarity = self._processor("embedding_similarity", engine, generation)
        assert isinstance(similarity, EmbeddingSimilarityProcessor)
        if family == "taxonomy":
            return TaxonomyProcessor(similarity)
        if family == "embedding_head":
            return EmbeddingHeadProcessor(similarity)
        raise LookupError(f"no processor for kind '{family}'")
