"""How far apart two label distributions are: Jensen-Shannon divergence and PSI.

Distributions are mappings label -> proportion (or count: both functions normalise); a label
missing from one side is an empty bin there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# PSI takes the log of each bin's ratio: an empty bin counts as this proportion instead.
PSI_EPSILON = 1e-4


def proportions(weights: Mapping[str, float]) -> dict[str, float]:
    """Scales non-negative weights to sum to 1; all-zero (or no) weights give an empty mapping."""
    if any(value < 0 for value in weights.values()):
        raise ValueError("label weights must not be negative")
    total = sum(weights.values())
    if total <= 0:
        return {}
    return {label: value / total for label, value in weights.items()}


def _aligned(
    reference: Mapping[str, float], recent: Mapping[str, float]
) -> list[tuple[float, float]]:
    p, q = proportions(reference), proportions(recent)
    if not p or not q:
        raise ValueError("both distributions need at least one non-zero bin")
    return [(p.get(label, 0.0), q.get(label, 0.0)) for label in sorted(p.keys() | q.keys())]


def js_divergence(reference: Mapping[str, float], recent: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence in base 2: 0 for equal distributions, 1 for disjoint ones.
    Empty bins need no epsilon (0 log 0 is 0)."""

    def kl_to_mean(a: float, mean: float) -> float:
        return a * math.log2(a / mean) if a > 0 else 0.0

    total = 0.0
    for p, q in _aligned(reference, recent):
        mean = (p + q) / 2
        total += (kl_to_mean(p, mean) + kl_to_mean(q, mean)) / 2
    return min(1.0, max(0.0, total))


def psi(reference: Mapping[str, float], recent: Mapping[str, float]) -> float:
    """Population stability index: sum of (recent - reference) * ln(recent / reference), with
    PSI_EPSILON for empty bins. 0 for equal distributions; above 0.25 is usually a big shift."""
    total = 0.0
    for p, q in _aligned(reference, recent):
        p, q = max(p, PSI_EPSILON), max(q, PSI_EPSILON)
        total += (q - p) * math.log(q / p)
    return total


DIVERGENCES = {"js": js_divergence, "psi": psi}
