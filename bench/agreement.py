"""Label agreement between two systems on the same texts, per capability.

An answer is what a result says: its label, its set of passing labels (llm_multilabel) or its
score (llm_score). Two scores agree within SCORE_TOLERANCE; other answers agree when equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capabilities.results import CapabilityResult

SCORE_TOLERANCE = 0.1

Answer = str | float | frozenset[str] | None
# text -> capability -> answer
Answers = dict[str, dict[str, Answer]]


def answer_of_body(body: Mapping[str, Any]) -> Answer:
    """The answer in a capserve response's result body."""
    if body.get("score") is not None:
        return float(body["score"])
    if body.get("labels") is not None:
        return frozenset(body["labels"])
    label = body.get("label")
    return None if label is None else str(label)


def answer_of_result(result: CapabilityResult) -> Answer:
    if result.score is not None:
        return float(result.score)
    if result.labels is not None:
        return frozenset(result.labels)
    return result.label


def agrees(a: Answer, b: Answer, tolerance: float = SCORE_TOLERANCE) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tolerance + 1e-9
    return a == b


def agreement(first: Answers, second: Answers) -> dict[str, dict[str, float]]:
    """Per capability: how many (text, capability) answers both systems gave, how many agree,
    and the share that agrees (in [0, 1])."""
    counts: dict[str, list[int]] = {}
    for text, mine in first.items():
        theirs = second.get(text)
        if theirs is None:
            continue
        for capability, answer in mine.items():
            if capability not in theirs:
                continue
            pair = counts.setdefault(capability, [0, 0])
            pair[0] += 1
            pair[1] += agrees(answer, theirs[capability])
    return {
        capability: {"compared": total, "agree": same, "rate": round(same / total, 4)}
        for capability, (total, same) in sorted(counts.items())
    }


def merge_agreement(parts: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Sums per-round agreement counts into one table."""
    totals: dict[str, list[float]] = {}
    for part in parts:
        for capability, row in part.items():
            pair = totals.setdefault(capability, [0.0, 0.0])
            pair[0] += row["compared"]
            pair[1] += row["agree"]
    return {
        capability: {"compared": total, "agree": same, "rate": round(same / total, 4)}
        for capability, (total, same) in sorted(totals.items())
        if total
    }
