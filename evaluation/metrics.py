"""Evaluation metrics: pure functions of gold values and predictions.

Conventions: F1 is 2tp / (2tp + fp + fn), which is 0 when a label was expected or predicted
but never both, and undefined (None) when it was neither; macro averages take the labels whose
F1 is defined (single-label: among the capability's own labels; a prediction outside them
counts against the gold label's recall). Precision is None for a label never predicted, recall
None for one never expected."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# A single-label prediction outside the capability's labels (or none at all) is counted here.
OTHER = "(other)"


@dataclass(frozen=True)
class LabelCounts:
    label: str
    tp: int
    fp: int
    fn: int

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float | None:
        predicted = self.tp + self.fp
        return self.tp / predicted if predicted else None

    @property
    def recall(self) -> float | None:
        return self.tp / self.support if self.support else None

    @property
    def f1(self) -> float | None:
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else None


@dataclass(frozen=True)
class SingleLabelMetrics:
    n: int
    accuracy: float
    macro_f1: float | None
    # Rows: gold label; columns: predicted label; both in the order of `labels`.
    labels: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]
    per_label: tuple[LabelCounts, ...]


@dataclass(frozen=True)
class MultilabelMetrics:
    n: int
    per_label: tuple[LabelCounts, ...]
    micro_f1: float | None
    macro_f1: float | None
    exact_match: float


@dataclass(frozen=True)
class ScoreMetrics:
    n: int
    mae: float
    spearman: float | None
    # Counts: the share of exact counts.
    exact: float | None = None


def _check_lengths(gold: Sequence[object], predicted: Sequence[object]) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold values but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no values to evaluate")


def accuracy(gold: Sequence[str], predicted: Sequence[str | None]) -> float:
    _check_lengths(gold, predicted)
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)


def confusion_matrix(
    gold: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]
) -> tuple[tuple[str, ...], npt.NDArray[np.int64]]:
    """Counts of (gold, predicted) pairs. A prediction outside `labels` (or None) goes to an
    extra last column and row, `(other)`, which appears only when needed."""
    _check_lengths(gold, predicted)
    unknown_gold = sorted(set(gold) - set(labels))
    if unknown_gold:
        raise ValueError(f"gold labels {unknown_gold} are not among the labels")
    names = tuple(labels)
    if any(p not in names for p in predicted):
        names = (*names, OTHER)
    index = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for g, p in zip(gold, predicted, strict=True):
        matrix[index[g], index[p] if p in index else index[OTHER]] += 1
    return names, matrix


def counts_from_confusion(
    names: Sequence[str], matrix: npt.NDArray[np.int64]
) -> tuple[LabelCounts, ...]:
    diagonal = np.diag(matrix)
    fp = matrix.sum(axis=0) - diagonal
    fn = matrix.sum(axis=1) - diagonal
    return tuple(
        LabelCounts(name, int(diagonal[i]), int(fp[i]), int(fn[i])) for i, name in enumerate(names)
    )


def macro_f1(per_label: Sequence[LabelCounts]) -> float | None:
    """The mean F1 of the labels that were expected or predicted at least once."""
    defined = [c.f1 for c in per_label if c.f1 is not None]
    return float(np.mean(defined)) if defined else None


def single_label_metrics(
    gold: Sequence[str], predicted: Sequence[str | None], labels: Sequence[str]
) -> SingleLabelMetrics:
    names, matrix = confusion_matrix(gold, predicted, labels)
    per_label = counts_from_confusion(names, matrix)
    return SingleLabelMetrics(
        n=len(gold),
        accuracy=accuracy(gold, predicted),
        macro_f1=macro_f1([c for c in per_label if c.label != OTHER]),
        labels=names,
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
        per_label=per_label,
    )


def taxonomy_prediction(
    gold: str, predicted: str | None, paths: Mapping[str, Sequence[str]]
) -> str | None:
    """The predicted node as counted against a gold node of a taxonomy: the gold itself when
    it is on the predicted path (a gold parent is right whichever child was chosen), else the
    predicted path's node at the gold's depth (its deepest, when the path is shorter)."""
    if predicted is None or predicted not in paths:
        return predicted
    path = paths[predicted]
    if gold in path:
        return gold
    return path[min(len(paths[gold]), len(path)) - 1]


def taxonomy_metrics(
    gold: Sequence[str], predicted: Sequence[str | None], paths: Mapping[str, Sequence[str]]
) -> SingleLabelMetrics:
    """Single-label metrics of a taxonomy, each prediction counted at its gold's depth; the
    confusion matrix shows the nodes that occur, in the taxonomy's order."""
    _check_lengths(gold, predicted)
    counted = [taxonomy_prediction(g, p, paths) for g, p in zip(gold, predicted, strict=True)]
    occurring = {*gold, *counted}
    return single_label_metrics(gold, counted, [node for node in paths if node in occurring])


def multilabel_metrics(
    gold: Sequence[Collection[str]], predicted: Sequence[Collection[str]], labels: Sequence[str]
) -> MultilabelMetrics:
    """Each label as its own yes/no question, plus exact match of the whole set."""
    _check_lengths(gold, predicted)
    per_label = tuple(
        LabelCounts(
            label,
            tp=sum(label in g and label in p for g, p in zip(gold, predicted, strict=True)),
            fp=sum(label not in g and label in p for g, p in zip(gold, predicted, strict=True)),
            fn=sum(label in g and label not in p for g, p in zip(gold, predicted, strict=True)),
        )
        for label in labels
    )
    total = LabelCounts(
        "micro",
        sum(c.tp for c in per_label),
        sum(c.fp for c in per_label),
        sum(c.fn for c in per_label),
    )
    exact = sum(set(g) == set(p) for g, p in zip(gold, predicted, strict=True)) / len(gold)
    return MultilabelMetrics(
        n=len(gold),
        per_label=per_label,
        micro_f1=total.f1,
        macro_f1=macro_f1(per_label),
        exact_match=exact,
    )


def mean_absolute_error(gold: Sequence[float], predicted: Sequence[float]) -> float:
    _check_lengths(gold, predicted)
    return float(np.mean(np.abs(np.asarray(gold, float) - np.asarray(predicted, float))))


def average_ranks(values: Sequence[float]) -> npt.NDArray[np.float64]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(
        np.asarray(values, float), return_inverse=True, return_counts=True
    )
    last_rank = np.cumsum(counts)
    mean_rank = last_rank - (counts - 1) / 2.0
    ranks: npt.NDArray[np.float64] = mean_rank[inverse].astype(np.float64)
    return ranks


def spearman(gold: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None when either side is
    constant, since the correlation is then undefined."""
    _check_lengths(gold, predicted)
    x = average_ranks(gold) - (len(gold) + 1) / 2.0
    y = average_ranks(predicted) - (len(gold) + 1) / 2.0
    denominator = float(np.sqrt(np.sum(x * x) * np.sum(y * y)))
    if denominator == 0.0:
        return None
    return float(np.sum(x * y) / denominator)


def score_metrics(gold: Sequence[float], predicted: Sequence[float]) -> ScoreMetrics:
    return ScoreMetrics(
        n=len(gold), mae=mean_absolute_error(gold, predicted), spearman=spearman(gold, predicted)
    )


def count_metrics(gold: Sequence[float], predicted: Sequence[float]) -> ScoreMetrics:
    exact = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)
    return ScoreMetrics(
        n=len(gold),
        mae=mean_absolute_error(gold, predicted),
        spearman=spearman(gold, predicted),
        exact=exact,
    )


Metrics = SingleLabelMetrics | MultilabelMetrics | ScoreMetrics
