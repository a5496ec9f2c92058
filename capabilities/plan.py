"""BatchPlan: what one window must compute, as a plain value that tests can inspect.

The plan deduplicates texts across the window's requests (unless told not to), takes the union
of what they ask for plus the transitive dependencies, and lists for each capability the unique
texts that still need computing. Results already known (from the result cache) are used as
they are: a known result is not computed, and neither are the dependencies it would have
needed, unless something else needs them. Steps left with no text are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult

# (capability name, text) -> its result, for results known before the window runs.
KnownResults = Mapping[tuple[str, str], CapabilityResult]


@dataclass(frozen=True)
class WorkItem:
    """One request's part of a window."""

    texts: tuple[str, ...]
    capabilities: tuple[str, ...]
    # The request also gets the results of the capabilities' dependencies.
    include_dependencies: bool = False


@dataclass(frozen=True)
class PlannedRequest:
    # For each of the request's texts, its index among the window's unique texts.
    text_ids: tuple[int, ...]
    requested: tuple[str, ...]
    # requested plus dependencies, in execution order.
    closure: tuple[str, ...]
    # What the request gets back: `requested`, or `closure` with include_dependencies.
    returned: tuple[str, ...]


@dataclass(frozen=True)
class CapabilityStep:
    capability: str
    depends_on: tuple[str, ...]
    # Indices among the window's unique texts, ascending.
    text_ids: tuple[int, ...]


@dataclass(frozen=True)
class BatchPlan:
    texts: tuple[str, ...]
    steps: tuple[CapabilityStep, ...]
    requests: tuple[PlannedRequest, ...]
    # Known results the window uses: capability -> unique text index -> result.
    known: Mapping[str, Mapping[int, CapabilityResult]] = field(default_factory=dict)
    # (capability, unique text) executions the window would need if nothing were known.
    text_executions_without_known: int = 0

    @property
    def capability_executions(self) -> int:
        return len(self.steps)

    @property
    def naive_equivalent_executions(self) -> int:
        """What running each request's capabilities on its own would have cost."""
        return sum(len(request.closure) for request in self.requests)

    @property
    def total_texts(self) -> int:
        return sum(len(request.text_ids) for request in self.requests)

    @property
    def text_executions(self) -> int:
        """(capability, unique text) executions the window runs."""
        return sum(len(step.text_ids) for step in self.steps)

    @property
    def text_executions_saved(self) -> int:
        """(capability, unique text) executions the known results spared."""
        return self.text_executions_without_known - self.text_executions

    def is_known(self, capability: str, text_id: int) -> bool:
        return text_id in self.known.get(capability, {})


def build_plan(
    registry: CapabilityRegistry,
    items: Sequence[WorkItem],
    known: KnownResults | None = None,
    dedup: bool = True,
) -> BatchPlan:
    """Plans a window. `known` holds results at hand by (capability, text); with `dedup` false
    every occurrence of a text is computed on its own."""
    known = known or {}
    texts: list[str] = []
    unique: dict[str, int] = {}
    planned: list[PlannedRequest] = []
    wanted: list[tuple[str, int]] = []
    without_known: set[tuple[str, int]] = set()
    for item in items:
        text_ids = tuple(_text_id(text, texts, unique, dedup) for text in item.texts)
        closure = tuple(registry.resolve(item.capabilities))
        returned = closure if item.include_dependencies else tuple(item.capabilities)
        planned.append(PlannedRequest(text_ids, tuple(item.capabilities), closure, returned))
        wanted.extend((name, tid) for name in returned for tid in text_ids)
        without_known.update((name, tid) for name in closure for tid in text_ids)
    needs: dict[str, set[int]] = {}
    used: dict[str, dict[int, CapabilityResult]] = {}
    seen: set[tuple[str, int]] = set()
    while wanted:
        name, tid = pair = wanted.pop()
        if pair in seen:
            continue
        seen.add(pair)
        result = known.get((name, texts[tid]))
        if result is not None:
            used.setdefault(name, {})[tid] = result
            continue
        needs.setdefault(name, set()).add(tid)
        wanted.extend((dep, tid) for dep in registry.get(name).depends_on)
    steps = tuple(
        CapabilityStep(
            capability=name,
            depends_on=registry.get(name).depends_on,
            text_ids=tuple(sorted(needs[name])),
        )
        for name in registry.resolve(needs)
        if needs.get(name)
    )
    return BatchPlan(
        texts=tuple(texts),
        steps=steps,
        requests=tuple(planned),
        known=used,
        text_executions_without_known=len(without_known),
    )


def _text_id(text: str, texts: list[str], unique: dict[str, int], dedup: bool) -> int:
    if dedup and text in unique:
        return unique[text]
    texts.append(text)
    unique.setdefault(text, len(texts) - 1)
    return len(texts) - 1
