"""CapabilitySet: one capability set and everything built from it, as one immutable value.

A hot reload builds a new set beside the old one and replaces the runtime's current set with a
single assignment. Every request is bound to the set current when it arrives and every window
runs entirely on the set of its requests, so a window never mixes versions, windows in flight
finish on the old set, and the result cache keys each result by the versions of its own set.

A set also runs on processors of its own (`ProcessorPool.bound`: the engines in service when
it was built), and counts what runs on it (`usage`: the requests bound to it and the plans its
executor runs), so that a reload closes the engines it replaced only once the sets bound to
them are idle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from capabilities.loader import CapabilityConfigError
from capabilities.plan import BatchPlan, KnownResults, WorkItem, build_plan
from capabilities.registry import CapabilityRegistry
from schemas.config import CapServeConfig
from server.caching.factory import exclude_problem
from server.caching.lookup import ResultLookup
from server.execution.executor import PlanExecutor, ProcessorSource, WindowOutcome
from server.registry_loading import load_registry


def load_servable_registry(config: CapServeConfig) -> CapabilityRegistry:
    """The set `config.capabilities_dir` holds, checked as a whole and against the rest of the
    configuration, as on a reload and in `capserve capabilities validate`. Raises
    CapabilityConfigError with every problem. Blocking (file reads): call it in a thread from
    the event loop."""
    registry = load_registry(config)
    problem = exclude_problem(config.cache, registry) if config.cache.enabled else None
    if problem is not None:
        raise CapabilityConfigError([problem])
    return registry


class SetUsage:
    """How many requests and plan runs use one capability set now."""

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1

    @property
    def busy(self) -> bool:
        return self.count > 0


class CountedExecutor(PlanExecutor):
    """The set's PlanExecutor, counting the plans it runs in the set's usage."""

    def __init__(
        self, registry: CapabilityRegistry, processors: ProcessorSource, usage: SetUsage
    ) -> None:
        super().__init__(registry, processors)
        self.usage = usage

    async def run(self, *args: Any, **kwargs: Any) -> WindowOutcome:
        with self.usage.held():
            return await super().run(*args, **kwargs)


# eq=False: two sets are the same set only if they are the same object (the batcher groups
# windows by set), however alike their contents.
@dataclass(frozen=True, eq=False)
class CapabilitySet:
    registry: CapabilityRegistry
    executor: PlanExecutor
    # The result cache, keyed by this set's versions; None when the cache is off.
    cache: ResultLookup | None
    # 1 for the set loaded at start-up, one more for each set a reload puts in force.
    generation: int = 1
    usage: SetUsage = field(default_factory=SetUsage)

    @classmethod
    def build(
        cls,
        registry: CapabilityRegistry,
        processors: ProcessorSource,
        cache: ResultLookup | None,
        generation: int = 1,
    ) -> CapabilitySet:
        """The set of `registry`; `cache` may be keyed by another set: only its storage is
        shared."""
        keyed = None if cache is None else cache.for_registry(registry)
        usage = SetUsage()
        executor = CountedExecutor(registry, processors, usage)
        return cls(registry, executor, keyed, generation, usage)

    def successor(
        self, registry: CapabilityRegistry, processors: ProcessorSource | None = None
    ) -> CapabilitySet:
        """The set of `registry`, on `processors` (default: the same as this set's) and the
        same cache storage, one generation on."""
        return CapabilitySet.build(
            registry, processors or self.executor.processors, self.cache, self.generation + 1
        )

    @property
    def processors(self) -> ProcessorSource:
        return self.executor.processors

    def plan(
        self, items: Sequence[WorkItem], known: KnownResults | None = None, dedup: bool = True
    ) -> BatchPlan:
        return build_plan(self.registry, items, known, dedup)

    def versions(self) -> dict[str, str]:
        return {spec.name: spec.version for spec in self.registry.specs()}


@dataclass(frozen=True)
class VersionChange:
    name: str
    old_version: str
    new_version: str


@dataclass(frozen=True)
class SetChanges:
    """How one capability set differs from another, by name and version."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[VersionChange, ...]
    unchanged: int

    @classmethod
    def between(cls, old: Mapping[str, str], new: Mapping[str, str]) -> SetChanges:
        """`old` and `new` map each capability's name to its version."""
        kept = sorted(set(old) & set(new))
        return cls(
            added=tuple(sorted(set(new) - set(old))),
            removed=tuple(sorted(set(old) - set(new))),
            changed=tuple(
                VersionChange(name, old[name], new[name]) for name in kept if old[name] != new[name]
            ),
            unchanged=sum(1 for name in kept if old[name] == new[name]),
        )

    @property
    def to_warm_up(self) -> tuple[str, ...]:
        """The capabilities whose new versions have not run yet."""
        return tuple(sorted([*self.added, *(c.name for c in self.changed)]))
