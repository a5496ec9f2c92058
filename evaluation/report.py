"""The outcome of an evaluation, as JSON and as Markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evaluation.metrics import (
    LabelCounts,
    Metrics,
    MultilabelMetrics,
    ScoreMetrics,
    SingleLabelMetrics,
)

FORM_TITLES = {
    "single_label": "single label",
    "multilabel": "multilabel",
    "score": "score",
    "count": "count",
}
ERRORS_SHOWN = 20


@dataclass(frozen=True)
class RowError:
    """A capability that failed on one row: named by line and capability, never by text."""

    line: int
    capability: str
    reason: str


@dataclass(frozen=True)
class CapabilityReport:
    name: str
    kind: str
    form: str
    version: str
    errors: int
    metrics: Metrics | None  # None when the capability failed on every row


@dataclass(frozen=True)
class EvalReport:
    file: str
    split: str | None
    layout: str | None  # the forced layout, or None: each capability's own
    rows: int
    seconds: float
    capabilities: tuple[CapabilityReport, ...]
    errors: tuple[RowError, ...]


def _num(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _counts_json(counts: LabelCounts) -> dict[str, Any]:
    return {
        "support": counts.support,
        "predicted": counts.tp + counts.fp,
        "precision": _num(counts.precision),
        "recall": _num(counts.recall),
        "f1": _num(counts.f1),
    }


def metrics_json(metrics: Metrics) -> dict[str, Any]:
    if isinstance(metrics, SingleLabelMetrics):
        return {
            "n": metrics.n,
            "accuracy": _num(metrics.accuracy),
            "macro_f1": _num(metrics.macro_f1),
            "labels": list(metrics.labels),
            "confusion": [list(row) for row in metrics.confusion],
            "per_label": {c.label: _counts_json(c) for c in metrics.per_label},
        }
    if isinstance(metrics, MultilabelMetrics):
        return {
            "n": metrics.n,
            "micro_f1": _num(metrics.micro_f1),
            "macro_f1": _num(metrics.macro_f1),
            "exact_match": _num(metrics.exact_match),
            "per_label": {c.label: _counts_json(c) for c in metrics.per_label},
        }
    return {"n": metrics.n, "mae": _num(metrics.mae), "spearman": _num(metrics.spearman)}


def report_json(report: EvalReport) -> dict[str, Any]:
    return {
        "file": report.file,
        "split": report.split,
        "layout": report.layout,
        "rows": report.rows,
        "seconds": round(report.seconds, 2),
        "capabilities": {
            c.name: {
                "kind": c.kind,
                "form": c.form,
                "version": c.version,
                "errors": c.errors,
                **(metrics_json(c.metrics) if c.metrics is not None else {"n": 0}),
            }
            for c in report.capabilities
        },
        "errors": [
            {"line": e.line, "capability": e.capability, "reason": e.reason} for e in report.errors
        ],
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def summary_table(capabilities: Sequence[CapabilityReport]) -> list[str]:
    """One line per capability with its headline numbers."""
    rows = []
    for c in capabilities:
        m = c.metrics
        if isinstance(m, SingleLabelMetrics):
            headline = f"accuracy {_fmt(m.accuracy)}, macro-F1 {_fmt(m.macro_f1)}"
        elif isinstance(m, MultilabelMetrics):
            headline = (
                f"micro-F1 {_fmt(m.micro_f1)}, macro-F1 {_fmt(m.macro_f1)}, "
                f"exact match {_fmt(m.exact_match)}"
            )
        elif isinstance(m, ScoreMetrics):
            headline = f"MAE {_fmt(m.mae)}, Spearman {_fmt(m.spearman)}"
            if m.exact is not None:
                headline = f"exact {_fmt(m.exact)}, {headline}"
        else:
            headline = "-"
        rows.append([c.name, FORM_TITLES[c.form], m.n if m else 0, c.errors, headline])
    return _table(["capability", "kind", "n", "errors", "result"], rows)


def confusion_table(metrics: SingleLabelMetrics) -> list[str]:
    rows = [
        [f"**{label}**", *row] for label, row in zip(metrics.labels, metrics.confusion, strict=True)
    ]
    return _table(["gold \\ predicted", *metrics.labels], rows)


def per_label_table(per_label: Sequence[LabelCounts]) -> list[str]:
    rows = [
        [c.label, c.support, c.tp + c.fp, _fmt(c.precision), _fmt(c.recall), _fmt(c.f1)]
        for c in per_label
    ]
    return _table(["label", "support", "predicted", "precision", "recall", "F1"], rows)


def capability_section(c: CapabilityReport) -> list[str]:
    lines = [f"### {c.name} ({FORM_TITLES[c.form]}, {c.kind}, version {c.version})", ""]
    m = c.metrics
    errors = f", {c.errors} errors" if c.errors else ""
    if m is None:
        return [*lines, f"No result: the capability failed on all {c.errors} rows."]
    if isinstance(m, SingleLabelMetrics):
        lines.append(f"n {m.n}{errors}; accuracy {_fmt(m.accuracy)}; macro-F1 {_fmt(m.macro_f1)}")
        lines += ["", *confusion_table(m)]
    elif isinstance(m, MultilabelMetrics):
        lines.append(
            f"n {m.n}{errors}; micro-F1 {_fmt(m.micro_f1)}; macro-F1 {_fmt(m.macro_f1)}; "
            f"exact-match accuracy {_fmt(m.exact_match)}"
        )
        lines += ["", *per_label_table(m.per_label)]
    else:
        lines.append(
            f"n {m.n}{errors}; mean absolute error {_fmt(m.mae)}; "
            f"Spearman rank correlation {_fmt(m.spearman)}"
        )
    return lines


def format_report(report: EvalReport) -> str:
    layout = report.layout or "each capability's own"
    split = report.split or "all rows"
    lines = [
        f"Evaluation of `{report.file}` ({split}), layout: {layout}; {report.rows} rows, "
        f"{len(report.errors)} errors, {report.seconds:.1f} s.",
        "",
        *summary_table(report.capabilities),
    ]
    for capability in report.capabilities:
        lines += ["", *capability_section(capability)]
    if report.errors:
        lines += ["", "Errors (line, capability, reason):", ""]
        lines += [
            f"- line {e.line}, {e.capability}: {e.reason}" for e in report.errors[:ERRORS_SHOWN]
        ]
        if len(report.errors) > ERRORS_SHOWN:
            lines.append(f"- ... and {len(report.errors) - ERRORS_SHOWN} more")
    return "\n".join(lines)
