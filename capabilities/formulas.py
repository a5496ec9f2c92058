"""Evaluates a `formula` capability: a number computed from dependency results, no model.

score = clip(sum(weight * input)), where an input is a dependency's `score` (`dep`) or a named
field of its result (`dep.field`), e.g. seed 000's prompt_complexity_score:

    0.35*creativity_scope + 0.25*reasoning + 0.15*constraint_ct + 0.15*domain_knowledge
    + 0.05*contextual_knowledge + 0.05*number_of_few_shots.count
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from schemas.capability import FormulaDefinition


@dataclass(frozen=True)
class InputRef:
    """One input of a formula: `dep` or `dep.field`, and the field name it is reported as."""

    ref: str
    dep: str
    field: str | None
    reported_as: str

    def value(self, deps: Mapping[str, CapabilityResult]) -> float | None:
        """The input's number for one text, or None when the result has none. A count stays
        an int (seed 000's number_of_few_shots is an integer)."""
        result = deps.get(self.dep)
        if result is None:
            return None
        raw = result.score if self.field is None else (result.fields or {}).get(self.field)
        if isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and math.isfinite(raw):
            return raw
        return None


def input_refs(formula: FormulaDefinition) -> list[InputRef]:
    """The terms, then the report-only inputs. Each is reported under its dependency's name (as
    seed 000 reports `number_of_few_shots`), or under the whole ref when another input reads the
    same dependency, so that no two share a field."""
    refs = list(dict.fromkeys([*formula.terms, *formula.report]))
    deps = [ref.split(".", 1)[0] for ref in refs]
    parsed = []
    for ref, dep in zip(refs, deps, strict=True):
        field = ref.split(".", 1)[1] if "." in ref else None
        reported_as = dep if deps.count(dep) == 1 else ref
        parsed.append(InputRef(ref, dep, field, reported_as))
    return parsed


def clip(value: float, bounds: tuple[float, float] | None) -> float:
    if bounds is None:
        return value
    low, high = bounds
    return min(max(value, low), high)


def evaluate_formula(
    spec: CapabilitySpec, deps: Mapping[str, CapabilityResult]
) -> CapabilityResult:
    """The formula's result for one text; an input without a number gives an error result."""
    formula = spec.definition.formula
    if formula is None:
        raise ValueError(f"capability '{spec.name}' is not a formula")
    values: dict[str, float] = {}
    fields: dict[str, float] = {}
    refs = input_refs(formula)
    for ref in refs:
        value = ref.value(deps)
        if value is None:
            return CapabilityResult.failed_output(
                spec.name, spec.version, f"input '{ref.ref}' has no value"
            )
        values[ref.ref] = value
        fields[ref.reported_as] = value
    total = clip(sum(weight * values[ref] for ref, weight in formula.terms.items()), formula.clip)
    fields[formula.field or spec.name] = total
    # The total is no surer than the least sure result it reads.
    confidence = min((deps[ref.dep].confidence for ref in refs), default=1.0)
    return CapabilityResult(
        capability=spec.name,
        version=spec.version,
        label=None,
        confidence=confidence,
        probabilities={},
        details={"terms": dict(formula.terms)},
        score=total,
        fields=fields,
    )
