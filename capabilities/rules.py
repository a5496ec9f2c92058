"""Evaluates a `rule` capability: a pure function of dependency results, no model."""

from __future__ import annotations

from collections.abc import Mapping

from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from schemas.capability import ConditionDefinition


def _holds(condition: ConditionDefinition, result: CapabilityResult) -> bool:
    return result.label in condition.labels and result.confidence >= condition.min_confidence


def evaluate_rule(spec: CapabilitySpec, deps: Mapping[str, CapabilityResult]) -> CapabilityResult:
    """The first case whose conditions all hold gives the label, else the default.

    The confidence is the lowest confidence among the dependency results the decision rests on:
    a matched case's dependencies, or every dependency for the default.
    """
    rule = spec.definition.rule
    if rule is None:
        raise ValueError(f"capability '{spec.name}' is not a rule")
    label, matched, basis = rule.default, "default", list(deps.values())
    for number, case in enumerate(rule.cases):
        if all(_holds(cond, deps[dep]) for dep, cond in case.when.items()):
            label, matched, basis = case.label, f"case {number}", [deps[d] for d in case.when]
            break
    confidence = min((r.confidence for r in basis), default=1.0)
    probabilities = {name: (1.0 if name == label else 0.0) for name in spec.label_names}
    return CapabilityResult(
        capability=spec.name,
        version=spec.version,
        label=label,
        confidence=confidence,
        probabilities=probabilities,
        details={"matched": matched, "inputs": {name: r.label for name, r in deps.items()}},
    )
