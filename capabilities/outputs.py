"""Builds a capability's result from its label probabilities: single-label, with the extras
its definition asks for (a score from label values, seed 000's top-two fields), or multilabel,
where each label passes on its own threshold."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from capabilities.results import CapabilityResult, result_from_probabilities
from capabilities.spec import CapabilitySpec

NOT_APPLICABLE = "NA"


def label_value_score(spec: CapabilitySpec, probabilities: Mapping[str, float]) -> float | None:
    """The probability-weighted mean of the labels' values, when every label has one."""
    values = {label.name: label.value for label in spec.labels}
    if not values or any(value is None for value in values.values()):
        return None
    return sum(probabilities.get(name, 0.0) * (value or 0.0) for name, value in values.items())


def top_two_fields(spec: CapabilitySpec, probabilities: Mapping[str, float]) -> dict[str, Any]:
    """`<name>_1`, `<name>_2` ("NA" below second_min) and `<name>_prob`, as seed 000 has."""
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])
    first, p_first = ranked[0]
    second, p_second = ranked[1] if len(ranked) > 1 else (NOT_APPLICABLE, 0.0)
    if p_second < spec.definition.second_min:
        second = NOT_APPLICABLE
    return {
        f"{spec.name}_1": first,
        f"{spec.name}_2": second,
        f"{spec.name}_prob": round(p_first, 6),
    }


def single_label_result(
    spec: CapabilitySpec,
    probabilities: Mapping[str, float],
    details: Mapping[str, Any] | None = None,
) -> CapabilityResult:
    result = result_from_probabilities(spec.name, spec.version, probabilities, details)
    fields = top_two_fields(spec, probabilities) if spec.definition.top_two_fields else None
    return dataclasses.replace(result, score=label_value_score(spec, probabilities), fields=fields)


def multilabel_result(
    spec: CapabilitySpec,
    probabilities: Mapping[str, float],
    details: Mapping[str, Any] | None = None,
) -> CapabilityResult:
    """Independent label probabilities: `labels` holds those at or above their threshold, most
    probable first, and `label` the most probable of them (None when none passes)."""
    passing = sorted(
        (label.name for label in spec.labels if probabilities[label.name] >= label.threshold),
        key=lambda name: -probabilities[name],
    )
    # Confidence in the answer as a whole: each label's decision is as sure as its distance
    # from a coin flip; the least sure one bounds the answer.
    confidence = min(max(p, 1.0 - p) for p in probabilities.values())
    return CapabilityResult(
        capability=spec.name,
        version=spec.version,
        label=passing[0] if passing else None,
        confidence=confidence,
        probabilities=dict(probabilities),
        details=dict(details or {}),
        labels=tuple(passing),
    )
