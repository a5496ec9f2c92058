"""Label drift: for each capability, the label distribution of its most recent predictions
against a reference, as a Jensen-Shannon divergence or a PSI.

The reference of a capability is its entry in `reference_file` (JSON {capability: {label:
proportion}}) when it has one, or else the label distribution of its first `reference_size`
predictions after start. A prediction is one computed (capability, unique text) result of a
window; a multilabel result adds each of its labels. Skipped, error and score-only results
predict no label and are left out.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import NonNegativeFloat, TypeAdapter, ValidationError

from schemas.config import DriftConfig
from server.execution.observers import WindowReport
from server.observability.divergence import DIVERGENCES, proportions
from server.observability.labels import computed_results, predicted_labels
from server.settings import ConfigError

ReferenceSource = Literal["file", "first_predictions"]

_REFERENCE_FILE = TypeAdapter(dict[str, dict[str, NonNegativeFloat]])


class DriftReferenceError(ConfigError):
    """The drift reference file cannot be used (the server does not start)."""


def load_reference_file(path: Path) -> dict[str, dict[str, float]]:
    """Reads {capability: {label: proportion}}; each capability's proportions are normalised."""
    try:
        raw = _REFERENCE_FILE.validate_json(path.read_bytes())
    except OSError as exc:
        raise DriftReferenceError(f"drift reference file {path}: {exc.strerror}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
            for err in exc.errors()
        )
        raise DriftReferenceError(f"drift reference file {path}: {problems}") from None
    references: dict[str, dict[str, float]] = {}
    for capability, weights in raw.items():
        normalised = proportions(weights)
        if not normalised:
            raise DriftReferenceError(
                f"drift reference file {path}: '{capability}' has no label with a proportion > 0"
            )
        references[capability] = normalised
    return references


@dataclass
class CapabilityDrift:
    """One capability's reference and its most recent predictions."""

    recent_limit: int
    reference_limit: int
    # From the reference file; None while the reference is the first predictions.
    reference_file: Mapping[str, float] | None = None
    reference_counts: Counter[str] = field(default_factory=Counter)
    reference_predictions: int = 0
    recent: deque[tuple[str, ...]] = field(default_factory=deque)
    recent_counts: Counter[str] = field(default_factory=Counter)

    def add(self, labels: tuple[str, ...]) -> None:
        if self.reference_file is None and self.reference_predictions < self.reference_limit:
            self.reference_counts.update(labels)
            self.reference_predictions += 1
        self.recent.append(labels)
        self.recent_counts.update(labels)
        if len(self.recent) > self.recent_limit:
            self.recent_counts.subtract(self.recent.popleft())

    @property
    def source(self) -> ReferenceSource:
        return "first_predictions" if self.reference_file is None else "file"

    def reference(self) -> Mapping[str, float] | None:
        """The reference distribution, or None while the first predictions still fill it."""
        if self.reference_file is not None:
            return self.reference_file
        if self.reference_predictions < self.reference_limit:
            return None
        return self.reference_counts


@dataclass(frozen=True)
class DriftReading:
    metric: str
    # None until both the reference and the recent window hold predictions.
    value: float | None
    alert: bool
    reference_source: ReferenceSource
    # Predictions in the reference (None for a file) and in the recent window.
    reference_size: int | None
    recent_size: int


class DriftMonitor:
    """A WindowObserver: keeps each capability's predictions and reads their drift."""

    def __init__(
        self, config: DriftConfig, references: Mapping[str, Mapping[str, float]] | None = None
    ) -> None:
        self.config = config
        self._divergence = DIVERGENCES[config.metric]
        self._references = dict(references or {})
        self._capabilities: dict[str, CapabilityDrift] = {}
        for name in self._references:
            self._capability(name)

    @classmethod
    def from_config(cls, config: DriftConfig) -> DriftMonitor:
        """Reads the reference file, if one is configured (DriftReferenceError if unusable)."""
        references = None
        if config.enabled and config.reference_file is not None:
            references = load_reference_file(config.reference_file)
        return cls(config, references)

    def _capability(self, name: str) -> CapabilityDrift:
        drift = self._capabilities.get(name)
        if drift is None:
            drift = self._capabilities[name] = CapabilityDrift(
                self.config.recent, self.config.reference_size, self._references.get(name)
            )
        return drift

    def window_finished(self, report: WindowReport) -> None:
        if not self.config.enabled:
            return
        for capability, result in computed_results(report):
            labels = None if result is None else predicted_labels(result)
            if labels is not None:
                self._capability(capability).add(labels)

    def readings(self) -> dict[str, DriftReading]:
        """Every capability that has a reference or a prediction, by name."""
        return {name: self._reading(drift) for name, drift in sorted(self._capabilities.items())}

    def _reading(self, drift: CapabilityDrift) -> DriftReading:
        reference = drift.reference()
        value = None
        reference_size = None if drift.reference_file is not None else drift.reference_predictions
        if reference is not None and drift.recent:
            value = round(self._divergence(reference, drift.recent_counts), 6)
        return DriftReading(
            metric=self.config.metric,
            value=value,
            alert=value is not None and value > self.config.alert_threshold,
            reference_source=drift.source,
            reference_size=reference_size,
            recent_size=len(drift.recent),
        )

    def snapshot(self) -> dict[str, Any]:
        """The `drift` section of /stats."""
        return {
            "enabled": self.config.enabled,
            "metric": self.config.metric,
            "alert_threshold": self.config.alert_threshold,
            "recent": self.config.recent,
            "capabilities": {name: vars(r) for name, r in self.readings().items()},
        }
