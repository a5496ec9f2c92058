"""The outcome of one capability on one text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CapabilityResult:
    """What every kind returns. `label` is the single answer (None for a score);
    `probabilities` holds every label's probability: they sum to 1 for single-label kinds, and
    are independent per label for `llm_multilabel`, whose passing labels are in `labels`."""

    capability: str
    version: str
    label: str | None
    confidence: float
    probabilities: Mapping[str, float]
    # Kind-specific facts, e.g. the scoring method or the rule case that matched.
    details: Mapping[str, Any] = field(default_factory=dict)
    # llm_score: the value in [0, 1].
    score: float | None = None
    # llm_multilabel: every label whose probability reaches its threshold, most probable first;
    # regex: every pattern that matched.
    labels: tuple[str, ...] | None = None
    # Named structured output, visible to conditions and templates as `<capability>.<field>`:
    # llm_json's object, formula's inputs and total, regex's matches and count, top-two fields.
    fields: Mapping[str, Any] | None = None
    # Taxonomies: the chosen node of each level, from the root; details hold each level's
    # confidence.
    path: tuple[str, ...] | None = None
    # Why the capability did not run for this text (its `when` did not hold, or a dependency
    # was skipped); the other fields then carry no answer.
    skipped: str | None = None
    # Why the output could not be used (e.g. llm_json output that is not valid JSON): an
    # explicit error for this text, which its dependents skip on. Never cached.
    error: str | None = None

    @property
    def answered(self) -> bool:
        """Whether the result carries an answer (it was neither skipped nor in error)."""
        return self.skipped is None and self.error is None

    @property
    def cacheable(self) -> bool:
        """Whether the result may be cached: not an error, and not a skip that an upstream
        error caused (only a skip by the capability's own condition, which the cached
        dependency results decide, is kept). Skip reasons of the executor start with
        "condition" for the first kind and "dependency" for the others."""
        if self.error is not None:
            return False
        return self.skipped is None or self.skipped.startswith("condition")

    @classmethod
    def skip(cls, capability: str, version: str, reason: str) -> CapabilityResult:
        return cls(capability, version, None, 0.0, {}, skipped=reason)

    @classmethod
    def failed_output(
        cls, capability: str, version: str, error: str, details: Mapping[str, Any] | None = None
    ) -> CapabilityResult:
        return cls(capability, version, None, 0.0, {}, details=dict(details or {}), error=error)


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
