"""Evaluates a `rule` capability: a pure function of dependency results, no model."""

from __future__ import annotations

from collections.abc import Mapping

from capabilities.conditions import ConditionEvaluationError, parse_condition
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from schemas.capability import ConditionDefinition, RuleCase

# Keys of a rule result's details that the rule itself writes: case details may not use them.
RULE_DETAIL_KEYS = ("matched", "inputs")


def _holds(condition: ConditionDefinition, result: CapabilityResult) -> bool:
    return result.label in condition.labels and result.confidence >= condition.min_confidence


def _case_holds(
    case: RuleCase, deps: Mapping[str, CapabilityResult]
) -> tuple[bool, list[CapabilityResult]]:
    """Whether the case holds, and the dependency results it reads."""
    if isinstance(case.when, str):
        condition = parse_condition(case.when)
        basis = [deps[name] for name in sorted(condition.names)]
        try:
            return condition.holds(deps), basis
        except ConditionEvaluationError:
            return False, basis  # e.g. a field this result lacks: the case does not apply
    basis = [deps[dep] for dep in case.when]
    return all(_holds(cond, deps[dep]) for dep, cond in case.when.items()), basis


def evaluate_rule(spec: CapabilitySpec, deps: Mapping[str, CapabilityResult]) -> CapabilityResult:
    """The first case whose conditions all hold gives the label, else the default; the
    deciding case's `details` (or the rule's `default_details`) go into the result's details.

    The confidence is the lowest confidence among the dependency results the decision rests on:
    a matched case's dependencies, or every dependency for the default.
    """
    rule = spec.definition.rule
    if rule is None:
        raise ValueError(f"capability '{spec.name}' is not a rule")
    label, matched, basis = rule.default, "default", list(deps.values())
    extra = rule.default_details
    for number, case in enumerate(rule.cases):
        holds, case_basis = _case_holds(case, deps)
        if holds:
            label, matched, basis = case.label, f"case {number}", case_basis
            extra = case.details
            break
    confidence = min((r.confidence for r in basis), default=1.0)
    probabilities = {name: (1.0 if name == label else 0.0) for name in spec.label_names}
    return CapabilityResult(
        capability=spec.name,
        version=spec.version,
        label=label,
        confidence=confidence,
        probabilities=probabilities,
        details={
            **extra,
            "matched": matched,
            "inputs": {name: r.label for name, r in deps.items()},
        },
    )
