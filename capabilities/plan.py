"""BatchPlan: what one window must compute, as a plain value that tests can inspect.

The plan deduplicates texts across the window's requests, takes the union of what they ask for
plus the transitive dependencies, and lists for each capability the unique texts that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from capabilities.registry import CapabilityRegistry


@dataclass(frozen=True)
class WorkItem:
    """One request's part of a window."""

    texts: tuple[str, ...]
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class PlannedRequest:
    # For each of the request's texts, its index among the window's unique texts.
    text_ids: tuple[int, ...]
    requested: tuple[str, ...]
    # requested plus dependencies, in execution order.
    closure: tuple[str, ...]


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


def build_plan(registry: CapabilityRegistry, items: Sequence[WorkItem]) -> BatchPlan:
    unique: dict[str, int] = {}
    planned: list[PlannedRequest] = []
    needs: dict[str, set[int]] = {}
    for item in items:
        text_ids = tuple(unique.setdefault(text, len(unique)) for text in item.texts)
        closure = tuple(registry.resolve(item.capabilities))
        planned.append(PlannedRequest(text_ids, tuple(item.capabilities), closure))
        for name in closure:
            needs.setdefault(name, set()).update(text_ids)
    order = registry.resolve(needs)
    steps = tuple(
        CapabilityStep(
            capability=name,
            depends_on=registry.get(name).depends_on,
            text_ids=tuple(sorted(needs[name])),
        )
        for name in order
    )
    return BatchPlan(texts=tuple(unique), steps=steps, requests=tuple(planned))
