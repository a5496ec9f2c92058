"""The evaluation report as Markdown tables and JSON."""

from __future__ import annotations

from evaluation.metrics import multilabel_metrics, score_metrics, single_label_metrics
from evaluation.report import (
    CapabilityReport,
    EvalReport,
    RowError,
    format_report,
    report_json,
)


def sample_report() -> EvalReport:
    sentiment = single_label_metrics(
        ["positive", "negative", "neutral", "neutral"],
        ["positive", "neutral", "neutral", None],
        ["positive", "negative", "neutral"],
    )
    safety = multilabel_metrics(
        [{"toxicity"}, set(), set()],
        [{"toxicity"}, set(), {"prompt_injection"}],
        ["toxicity", "prompt_injection"],
    )
    reasoning = score_metrics([0.0, 0.5, 1.0], [0.1, 0.4, 0.8])
    return EvalReport(
        file="data.jsonl",
        split="test",
        layout="own",
        rows=5,
        seconds=12.345,
        capabilities=(
            CapabilityReport("safety", "llm_multilabel", "multilabel", "v1", 0, safety),
            CapabilityReport("sentiment", "llm_choice", "single_label", "v2", 1, sentiment),
            CapabilityReport("reasoning", "llm_score", "score", "v3", 0, reasoning),
            CapabilityReport("topic", "embedding_similarity", "single_label", "v4", 2, None),
        ),
        errors=(
            RowError(4, "sentiment", "engine failed"),
            RowError(4, "topic", "engine failed"),
            RowError(5, "topic", "engine failed"),
        ),
    )


def test_markdown_has_a_summary_line_per_capability():
    text = format_report(sample_report())
    assert text.splitlines()[0] == (
        "Evaluation of `data.jsonl` (test), layout: own; 5 rows, 3 errors, 12.3 s."
    )
    assert "| capability | kind | n | errors | result |" in text
    assert "| sentiment | single label | 4 | 1 | accuracy 0.500, macro-F1 0.500 |" in text
    assert (
        "| safety | multilabel | 3 | 0 | micro-F1 0.667, macro-F1 0.500, exact match 0.667 |"
        in text
    )
    assert "| reasoning | score | 3 | 0 | MAE 0.133, Spearman 1.000 |" in text
    assert "| topic | single label | 0 | 2 | - |" in text


def test_markdown_confusion_matrix_and_per_label_tables():
    text = format_report(sample_report())
    assert "| gold \\ predicted | positive | negative | neutral | (other) |" in text
    assert "| **negative** | 0 | 0 | 1 | 0 |" in text
    assert "| **neutral** | 0 | 0 | 1 | 1 |" in text
    assert "| label | support | predicted | precision | recall | F1 |" in text
    # prompt_injection: expected never, predicted once: no recall, F1 0.
    assert "| prompt_injection | 0 | 1 | 0.000 | - | 0.000 |" in text
    assert "mean absolute error 0.133; Spearman rank correlation 1.000" in text
    assert "No result: the capability failed on all 2 rows." in text
    assert "- line 5, topic: engine failed" in text


def test_json_carries_every_capability_with_rounded_numbers():
    result = report_json(sample_report())
    assert result["split"] == "test" and result["layout"] == "own" and result["seconds"] == 12.35
    capabilities = result["capabilities"]
    assert set(capabilities) == {"safety", "sentiment", "reasoning", "topic"}
    sentiment = capabilities["sentiment"]
    assert sentiment["accuracy"] == 0.5 and sentiment["macro_f1"] == 0.5
    assert sentiment["labels"] == ["positive", "negative", "neutral", "(other)"]
    assert sentiment["confusion"][2] == [0, 0, 1, 1]
    assert sentiment["errors"] == 1 and sentiment["version"] == "v2"
    assert capabilities["safety"]["per_label"]["toxicity"] == {
        "support": 1,
        "predicted": 1,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
    }
    assert capabilities["reasoning"] == {
        "kind": "llm_score",
        "form": "score",
        "version": "v3",
        "errors": 0,
        "n": 3,
        "mae": 0.1333,
        "spearman": 1.0,
    }
    assert capabilities["topic"]["n"] == 0
    assert result["errors"][0] == {"line": 4, "capability": "sentiment", "reason": "engine failed"}
