from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from schemas.config import DriftConfig
from server.observability.divergence import PSI_EPSILON, js_divergence, proportions, psi
from server.observability.drift import DriftMonitor, DriftReferenceError, load_reference_file
from server.observability.labels import NO_LABEL
from server.settings import ConfigError, load_config
from tests.unit.window_reports import (
    errored,
    labelled,
    multilabel,
    scored,
    skipped,
    window_report,
)

# Hand-computed: P = (0.5, 0.5), Q = (0.9, 0.1), M = (0.7, 0.3).
# JS = 1/2 [0.5 log2(0.5/0.7) + 0.5 log2(0.5/0.3)] + 1/2 [0.9 log2(0.9/0.7) + 0.1 log2(0.1/0.3)]
JS_HALF_VS_NINE_TENTHS = 0.146793
# PSI = (0.9 - 0.5) ln(0.9/0.5) + (0.1 - 0.5) ln(0.1/0.5) = 0.4 ln 1.8 + 0.4 ln 5
PSI_HALF_VS_NINE_TENTHS = 0.878890


def test_js_is_zero_for_equal_and_one_for_disjoint_distributions():
    assert js_divergence({"a": 0.3, "b": 0.7}, {"a": 3, "b": 7}) == pytest.approx(0.0)
    assert js_divergence({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)


def test_js_matches_hand_computed_values():
    assert js_divergence({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}) == pytest.approx(
        JS_HALF_VS_NINE_TENTHS, abs=1e-6
    )
    # Counts are normalised; a label missing on one side is an empty bin there:
    # P = (1, 0), Q = (0.5, 0.5), M = (0.75, 0.25):
    # 1/2 [log2(1/0.75)] + 1/2 [0.5 log2(0.5/0.75) + 0.5 log2(0.5/0.25)] = 0.311278
    assert js_divergence({"a": 4}, {"a": 1, "b": 1}) == pytest.approx(0.311278, abs=1e-6)
    # Symmetric.
    assert js_divergence({"a": 0.9, "b": 0.1}, {"a": 0.5, "b": 0.5}) == pytest.approx(
        JS_HALF_VS_NINE_TENTHS, abs=1e-6
    )


def test_psi_matches_hand_computed_values_with_epsilon_for_empty_bins():
    assert psi({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}) == pytest.approx(
        PSI_HALF_VS_NINE_TENTHS, abs=1e-6
    )
    assert psi({"a": 1, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.0)
    # Reference (1, 0) against recent (0.5, 0.5): the empty bin counts as PSI_EPSILON:
    # (0.5 - 1) ln(0.5 / 1) + (0.5 - 1e-4) ln(0.5 / 1e-4) = 4.604318
    assert PSI_EPSILON == 1e-4
    assert psi({"a": 1.0}, {"a": 0.5, "b": 0.5}) == pytest.approx(4.604318, abs=1e-6)


def test_proportions_and_bad_inputs():
    assert proportions({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    assert proportions({"a": 0}) == {}
    with pytest.raises(ValueError, match="negative"):
        proportions({"a": -1})
    with pytest.raises(ValueError, match="non-zero"):
        js_divergence({}, {"a": 1})


def config(**overrides: object) -> DriftConfig:
    return DriftConfig.model_validate({"recent": 10, "reference_size": 10, **overrides})


def sentiment_window(*labels: str):
    return window_report({"sentiment": [labelled("sentiment", label) for label in labels]})


def test_reference_is_the_first_predictions_then_recent_ones_are_compared():
    monitor = DriftMonitor(config())
    monitor.window_finished(sentiment_window(*["pos"] * 5, *["neg"] * 4))
    reading = monitor.readings()["sentiment"]
    # The reference is not complete (9 of 10): nothing to compare yet.
    assert (reading.value, reading.alert, reading.reference_size) == (None, False, 9)
    assert reading.reference_source == "first_predictions"
    monitor.window_finished(sentiment_window("neg"))
    # Reference and recent both hold the same 10 predictions: no drift.
    reading = monitor.readings()["sentiment"]
    assert reading.value == pytest.approx(0.0)
    assert (reading.reference_size, reading.recent_size) == (10, 10)
    # Ten more, nine positive: the recent window is now (0.9, 0.1) against (0.5, 0.5).
    monitor.window_finished(sentiment_window(*["pos"] * 9, "neg"))
    reading = monitor.readings()["sentiment"]
    assert reading.value == pytest.approx(JS_HALF_VS_NINE_TENTHS, abs=1e-5)
    assert reading.alert  # above the default threshold of 0.1
    assert (reading.reference_size, reading.recent_size, reading.metric) == (10, 10, "js")


def test_psi_and_the_alert_threshold():
    monitor = DriftMonitor(config(metric="psi", alert_threshold=1.0))
    monitor.window_finished(sentiment_window(*["pos", "neg"] * 5))
    monitor.window_finished(sentiment_window(*["pos"] * 9, "neg"))
    reading = monitor.readings()["sentiment"]
    assert reading.value == pytest.approx(PSI_HALF_VS_NINE_TENTHS, abs=1e-5)
    assert reading.metric == "psi"
    assert not reading.alert  # 0.88 is below 1.0


def test_multilabel_counts_each_label_and_scores_skips_and_errors_are_left_out():
    monitor = DriftMonitor(config())
    report = window_report(
        {
            "pii": [multilabel("pii", "email", "phone"), multilabel("pii"), None],
            "toxicity": [scored("toxicity", 0.2), skipped("toxicity"), errored("toxicity")],
        }
    )
    monitor.window_finished(report)
    readings = monitor.readings()
    assert "toxicity" not in readings  # no prediction with a label
    pii = monitor._capabilities["pii"]
    assert dict(pii.recent_counts) == {"email": 1, "phone": 1, NO_LABEL: 1}
    assert readings["pii"].recent_size == 2  # two predictions; the failed text is none


def test_reference_file_is_compared_at_once(tmp_path: Path):
    path = tmp_path / "reference.json"
    path.write_text(json.dumps({"sentiment": {"pos": 1, "neg": 1}, "topic": {"a": 2}}))
    monitor = DriftMonitor.from_config(config(reference_file=path))
    monitor.window_finished(sentiment_window(*["pos"] * 9, "neg"))
    readings = monitor.readings()
    assert readings["sentiment"].value == pytest.approx(JS_HALF_VS_NINE_TENTHS, abs=1e-5)
    assert readings["sentiment"].reference_source == "file"
    assert readings["sentiment"].reference_size is None
    # A capability of the file with no prediction yet is listed, with no value.
    assert (readings["topic"].value, readings["topic"].recent_size) == (None, 0)
    snapshot = monitor.snapshot()
    assert snapshot["capabilities"]["sentiment"]["alert"] is True
    assert (snapshot["metric"], snapshot["alert_threshold"]) == ("js", 0.1)


def test_recent_window_keeps_only_the_most_recent_predictions():
    monitor = DriftMonitor(config())
    for _ in range(5):
        monitor.window_finished(sentiment_window(*["pos"] * 7))
    drift = monitor._capabilities["sentiment"]
    assert len(drift.recent) == 10
    assert dict(drift.recent_counts) == {"pos": 10}


def test_disabled_drift_watches_nothing():
    monitor = DriftMonitor(config(enabled=False))
    monitor.window_finished(sentiment_window("pos"))
    assert monitor.readings() == {}
    assert monitor.snapshot()["enabled"] is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "Invalid JSON"),
        ('{"sentiment": {"pos": -1}}', "sentiment.pos"),
        ('{"sentiment": {"pos": 0}}', "no label with a proportion > 0"),
        ('["pos"]', "file: Input should be an object"),
    ],
)
def test_a_bad_reference_file_is_a_config_error(tmp_path: Path, content: str, message: str):
    path = tmp_path / "reference.json"
    path.write_text(content)
    with pytest.raises(DriftReferenceError, match=re.escape(message)) as info:
        load_reference_file(path)
    assert isinstance(info.value, ConfigError)
    assert str(path) in str(info.value)


def test_a_missing_reference_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(DriftReferenceError, match=r"missing\.json"):
        DriftMonitor.from_config(config(reference_file=tmp_path / "missing.json"))


def test_a_relative_reference_file_is_read_beside_the_config_file(tmp_path: Path):
    (tmp_path / "reference.json").write_text('{"sentiment": {"pos": 3, "neg": 1}}')
    path = tmp_path / "capserve.yaml"
    path.write_text(
        "models: {m: {source: x, runner: generate}}\n"
        "observability: {drift: {reference_file: reference.json}}\n"
    )
    drift_config = load_config(path, environ={}).observability.drift
    assert drift_config.reference_file == tmp_path / "reference.json"
    monitor = DriftMonitor.from_config(drift_config)
    assert monitor.readings()["sentiment"].reference_source == "file"
