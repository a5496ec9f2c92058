"""The label values a result counts under, for label counts and drift.

A result counts under each label it predicts: a multilabel (or regex) result under each of its
labels, any other under its `label`. Results that predict no label count under a value of their
own, which starts with an underscore so that it never clashes with a real label.
"""

from __future__ import annotations

from collections.abc import Iterator

from capabilities.results import CapabilityResult
from server.execution.observers import WindowReport

SKIPPED = "_skipped"  # a condition (or a skipped dependency) kept the text from running
ERROR = "_error"  # an error result, or a text the capability failed on
NO_LABEL = "_none"  # a multilabel result with no passing label
UNLABELLED = "_unlabelled"  # a result with no label at all (a score, a JSON without label field)


def predicted_labels(result: CapabilityResult) -> tuple[str, ...] | None:
    """The labels the result predicts, or None when it predicts no label distribution: a
    skipped, error or score-only result."""
    if not result.answered:
        return None
    if result.labels is not None:
        return result.labels or (NO_LABEL,)
    if result.label is not None:
        return (result.label,)
    return None


def counted_labels(result: CapabilityResult) -> tuple[str, ...]:
    """The values a result counts under in the label counts: always at least one."""
    if result.skipped is not None:
        return (SKIPPED,)
    if result.error is not None:
        return (ERROR,)
    return predicted_labels(result) or (UNLABELLED,)


def computed_results(report: WindowReport) -> Iterator[tuple[str, CapabilityResult | None]]:
    """Every (capability, unique text) the window computed, with its result, or None where the
    text failed. Results the window had at hand (from the cache) are not predictions of it."""
    for step in report.plan.steps:
        results = report.outcome.results.get(step.capability, {})
        for tid in step.text_ids:
            yield step.capability, results.get(tid)
