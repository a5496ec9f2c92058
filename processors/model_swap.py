"""What a reload does to the engines: which models it adds, replaces or removes, the engines it
started for them before the swap, and the processor source a capability set runs on (bound to
the engine generations in service when the set was built, so that a window of an old set never
picks up a new engine mid-way)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from capabilities.spec import CapabilitySpec
from processors.base import Processor
from processors.engines import Engine
from processors.supervisor import EngineSpec
from schemas.config import ModelConfig


@dataclass(frozen=True)
class ModelChanges:
    """How a reloaded `models` section differs from the one in force, by model name."""

    added: tuple[str, ...] = ()
    # Same name, another ModelConfig (source, engine_args...): a new engine replaces the old.
    replaced: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @classmethod
    def between(
        cls, old: Mapping[str, ModelConfig], new: Mapping[str, ModelConfig]
    ) -> ModelChanges:
        kept = sorted(set(old) & set(new))
        return cls(
            added=tuple(sorted(set(new) - set(old))),
            replaced=tuple(name for name in kept if old[name] != new[name]),
            removed=tuple(sorted(set(old) - set(new))),
        )

    @property
    def to_start(self) -> tuple[str, ...]:
        """The models that need a new engine."""
        return tuple(sorted([*self.added, *self.replaced]))

    @property
    def any(self) -> bool:
        return bool(self.added or self.replaced or self.removed)


@dataclass(frozen=True)
class StartedEngines:
    """Engines a reload started beside those in service, not in service yet."""

    models: dict[str, ModelConfig]
    changes: ModelChanges
    engines: dict[str, tuple[EngineSpec, Engine]]


# An engine of one model, one generation: each engine a reload starts gets a new generation.
EngineKey = tuple[str, int]


class GenerationSource(Protocol):
    def processor_on(self, spec: CapabilitySpec, generations: Mapping[str, int]) -> Processor: ...


class BoundProcessors:
    """The processors of one capability set: each model's engine of the generation in service
    when the set was built, for as long as the set runs."""

    def __init__(self, source: GenerationSource, generations: Mapping[str, int]) -> None:
        self._source = source
        self.generations = dict(generations)

    def processor_for(self, spec: CapabilitySpec) -> Processor:
        return self._source.processor_on(spec, self.generations)

    def engine_keys(self) -> set[EngineKey]:
        return set(self.generations.items())
