"""ProcessorPool: owns the engines (one per configured model, for the life of the process)
and hands out the processor that runs a capability."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from capabilities.spec import CapabilitySpec
from processors.base import Processor
from processors.classifier import ClassifierProcessor
from processors.embedding_head import EmbeddingHeadProcessor
from processors.embedding_similarity import EmbeddingSimilarityProcessor
from processors.engine_status import EngineStatus
from processors.engines import Engine, EngineFactory, EngineWork
from processors.formula import FormulaProcessor
from processors.json_output import JsonOutputProcessor
from processors.model_store import resolve_model_path
from processors.questions.processor import LLMQuestionProcessor
from processors.regex import RegexProcessor
from processors.rule import RuleProcessor
from processors.supervisor import EngineSpec, EngineSupervisor
from processors.taxonomy import TaxonomyProcessor
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
        self._processors: dict[tuple[str, str], Processor] = {}
        # Kinds that use no model: one processor each.
        self._modelless: dict[str, Processor] = {
            "rule": RuleProcessor(),
            "regex": RegexProcessor(),
            "formula": FormulaProcessor(),
        }

    @property
    def engine_constructions(self) -> int:
        return self.factory.constructions

    def check_models(self) -> dict[str, str]:
        """Resolves every model's path; raises ModelNotReadyError before any engine starts."""
        return {
            name: resolve_model_path(name, model.source, self._models_dir)
            for name, model in self._models.items()
        }

    @property
    def engines(self) -> dict[str, Engine]:
        return {} if self.supervisor is None else self.supervisor.engines

    async def start(self) -> None:
        """Starts every engine once, off the event loop, under the supervisor, which restarts
        an engine that dies."""
        paths = self.check_models()
        specs = {name: EngineSpec(name, model, paths[name]) for name, model in self._models.items()}
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

    def processor_for(self, spec: CapabilitySpec) -> Processor:
        if spec.kind in self._modelless:
            return self._modelless[spec.kind]
        if spec.model is None or spec.model not in self.engines:
            raise LookupError(f"capability '{spec.name}': model '{spec.model}' has no engine")
        if spec.is_question:
            # One question processor per engine answers every LLM question kind on it, so
            # that all the questions about a text can share its prefill.
            return self._processor("llm_question", spec.model)
        if spec.kind == "embedding_similarity" and any(lb.children for lb in spec.labels):
            return self._processor("taxonomy", spec.model)
        return self._processor(spec.kind, spec.model)

    def _processor(self, family: str, model: str) -> Processor:
        key = (family, model)
        processor = self._processors.get(key)
        if processor is None:
            processor = self._build(family, model)
            self._processors[key] = processor
        return processor

    def _build(self, family: str, model: str) -> Processor:
        engine = self.engines[model]
        if family == "llm_question":
            return LLMQuestionProcessor(engine, self._prompting.max_tokens_in_flight)
        if family == "llm_json":
            return JsonOutputProcessor(engine)
        if family == "classifier":
            return ClassifierProcessor(engine)
        if family == "embedding_similarity":
            return EmbeddingSimilarityProcessor(engine)
        # These read the text embeddings the window's embedding_similarity capabilities share.
        similarity = self._processor("embedding_similarity", model)
        assert isinstance(similarity, EmbeddingSimilarityProcessor)
        if family == "taxonomy":
            return TaxonomyProcessor(similarity)
        if family == "embedding_head":
            return EmbeddingHeadProcessor(similarity)
        raise LookupError(f"no processor for kind '{family}'")
