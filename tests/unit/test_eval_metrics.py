"""Evaluation metrics on examples computed by hand."""

from __future__ import annotations

import math

import pytest

from evaluation.metrics import (
    OTHER,
    LabelCounts,
    accuracy,
    average_ranks,
    confusion_matrix,
    mean_absolute_error,
    multilabel_metrics,
    score_metrics,
    single_label_metrics,
    spearman,
)


def test_accuracy_counts_exact_agreement():
    assert accuracy(["a", "a", "b", "c"], ["a", "b", "b", "c"]) == 0.75
    assert accuracy(["a"], [None]) == 0.0


def test_confusion_matrix_rows_are_gold_and_columns_predicted():
    names, matrix = confusion_matrix(["a", "a", "b", "b"], ["a", "b", "b", "c"], ["a", "b", "c"])
    assert names == ("a", "b", "c")
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_a_prediction_outside_the_labels_gets_its_own_column():
    names, matrix = confusion_matrix(["a", "b"], ["a", None], ["a", "b"])
    assert names == ("a", "b", OTHER)
    assert matrix.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_macro_f1_counts_only_the_capabilitys_own_labels():
    # positive F1 1, neutral F1 2/3 (tp 1, fn 1); the stray prediction is only a miss.
    metrics = single_label_metrics(
        ["positive", "neutral", "neutral"], ["positive", "neutral", None], ["positive", "neutral"]
    )
    assert metrics.labels == ("positive", "neutral", OTHER)
    assert metrics.macro_f1 == pytest.approx((1 + 2 / 3) / 2)


def test_unknown_gold_label_and_length_mismatch_are_refused():
    with pytest.raises(ValueError, match="not among the labels"):
        confusion_matrix(["z"], ["a"], ["a"])
    with pytest.raises(ValueError, match="1 gold values but 2 predictions"):
        accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no values"):
        accuracy([], [])


def test_macro_f1_skips_a_class_never_expected_nor_predicted():
    # a: tp 1, fn 1 -> F1 2/3; b: tp 1, fp 1, fn 1 -> 1/2; c: fp 1 -> 0; d: absent -> skipped.
    metrics = single_label_metrics(["a", "a", "b", "b"], ["a", "b", "b", "c"], ["a", "b", "c", "d"])
    assert metrics.n == 4
    assert metrics.accuracy == 0.5
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    by_label = {c.label: c for c in metrics.per_label}
    assert by_label["d"].f1 is None
    assert by_label["c"].f1 == 0.0 and by_label["c"].recall is None
    assert by_label["b"].precision == 0.5 and by_label["b"].recall == 0.5
    assert metrics.confusion[0] == (1, 1, 0, 0)


def test_label_counts_conventions():
    never_predicted = LabelCounts("x", tp=0, fp=0, fn=3)
    assert never_predicted.precision is None
    assert never_predicted.recall == 0.0
    assert never_predicted.f1 == 0.0
    assert never_predicted.support == 3
    assert LabelCounts("y", 0, 0, 0).f1 is None


def test_multilabel_per_label_micro_macro_and_exact_match():
    gold = [{"toxicity"}, {"prompt_injection"}, {"toxicity", "prompt_injection"}, set()]
    predicted = [{"toxicity"}, set(), {"toxicity"}, {"prompt_injection"}]
    metrics = multilabel_metrics(gold, predicted, ["toxicity", "prompt_injection", "spam"])
    toxicity, injection, spam = metrics.per_label
    assert (toxicity.tp, toxicity.fp, toxicity.fn) == (2, 0, 0)
    assert toxicity.f1 == 1.0
    assert (injection.tp, injection.fp, injection.fn) == (0, 1, 2)
    assert injection.f1 == 0.0 and injection.precision == 0.0 and injection.recall == 0.0
    assert spam.f1 is None  # never expected nor predicted: not in the macro average
    assert metrics.micro_f1 == pytest.approx(4 / 7)  # tp 2, fp 1, fn 2
    assert metrics.macro_f1 == pytest.approx(0.5)
    assert metrics.exact_match == 0.25


def test_mean_absolute_error():
    assert mean_absolute_error([0.0, 0.5, 1.0], [0.1, 0.5, 0.7]) == pytest.approx(0.4 / 3)


def test_average_ranks_share_ties():
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_with_ties():
    # Ranks: gold [1, 2.5, 2.5, 4], predicted [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10).
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert spearman([0.1, 0.2, 0.3], [0.9, 0.5, 0.0]) == pytest.approx(-1.0)


def test_spearman_is_undefined_for_a_constant_side():
    assert spearman([0.2, 0.2, 0.2], [0.1, 0.5, 0.9]) is None
    result = score_metrics([0.0, 1.0], [0.5, 0.5])
    assert result.spearman is None and result.mae == 0.5 and result.n == 2
