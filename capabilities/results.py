"""The outcome of one capability on one text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CapabilityResult:
    capability: str
    version: str
    label: str
    confidence: float
    # The probability of every label of the capability; they sum to 1.
    probabilities: Mapping[str, float]
    # Kind-specific facts, e.g. the scoring method or the rule case that matched.
    details: Mapping[str, Any] = field(default_factory=dict)


def normalise(scores: Mapping[str, float]) -> dict[str, float]:
    """Scales non-negative scores to probabilities; all-zero scores become uniform."""
    total = sum(scores.values())
    if total <= 0:
        return {name: 1.0 / len(scores) for name in scores}
    return {name: value / total for name, value in scores.items()}


def result_from_probabilities(
    capability: str,
    version: str,
    probabilities: Mapping[str, float],
    details: Mapping[str, Any] | None = None,
) -> CapabilityResult:
    """Picks the most probable label (the first one listed on a tie)."""
    label = max(probabilities, key=lambda name: probabilities[name])
    return CapabilityResult(
        capability=capability,
        version=version,
        label=label,
        confidence=probabilities[label],
        probabilities=dict(probabilities),
        details=dict(details or {}),
    )
