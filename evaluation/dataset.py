"""Reads and validates a labeled JSONL file for `capserve eval`.

One row per line: `{"text": ..., "labels": {capability: value}, "split": "dev"|"test"}`
(`split` optional). The value is a label for a single-label capability, a list of the labels
that apply (`[]` for none) for a multilabel one, and a number in [0, 1] for a score.

Every problem names the line number and the capability, never the text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from capabilities.kind_checks import walk_labels
from capabilities.spec import CapabilitySpec
from schemas.capability import LabelDefinition

Form = Literal["single_label", "multilabel", "score", "count"]
Gold = str | frozenset[str] | float
SPLITS = ("dev", "test")
ROW_KEYS = frozenset({"text", "labels", "split"})
MAX_PROBLEMS_SHOWN = 20

_FORM_OF_KIND: dict[str, Form] = {
    "llm_choice": "single_label",
    "embedding_similarity": "single_label",
    "embedding_head": "single_label",
    "classifier": "single_label",
    "rule": "single_label",
    "llm_multilabel": "multilabel",
    "embedding_multilabel": "multilabel",
    "llm_score": "score",
    "formula": "score",
    # A regex is evaluated on its count of matches (e.g. number_of_few_shots).
    "regex": "count",
}


class DatasetError(ValueError):
    """The file cannot be evaluated; one line per problem, each naming a line and capability."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        more = len(self.problems) - len(shown)
        lines = [f"{path}: {problem}" for problem in shown]
        if more:
            lines.append(f"... and {more} more problems")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class LabelSpace:
    """What a capability's gold values must look like."""

    name: str
    form: Form
    labels: tuple[str, ...]  # empty for scores; a taxonomy's: every node, parents first
    # A taxonomy's nodes -> their path from the root (empty for any other capability): its gold
    # value may be any node, and is correct when it is on the predicted path.
    paths: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalRow:
    line: int  # 1-based line number in the file
    text: str
    gold: Mapping[str, Gold]  # capability -> gold value (only the selected capabilities)
    split: str | None


def node_paths(
    labels: Sequence[LabelDefinition], above: tuple[str, ...] = ()
) -> dict[str, tuple[str, ...]]:
    """Every node of a taxonomy -> its path from the root, parents first."""
    paths: dict[str, tuple[str, ...]] = {}
    for label in labels:
        paths[label.name] = (*above, label.name)
        paths.update(node_paths(label.children, paths[label.name]))
    return paths


def label_space(spec: CapabilitySpec) -> LabelSpace | None:
    """The capability's label space, or None when its kind cannot be evaluated."""
    form = _FORM_OF_KIND.get(spec.kind)
    if form is None:
        return None
    if spec.labels and all(label.value is not None for label in spec.labels):
        form = "score"  # labels with values: the result's score is what is evaluated
    if any(label.children for label in spec.labels):
        names = tuple(label.name for label in walk_labels(spec.labels))
        return LabelSpace(spec.name, form, names, node_paths(spec.labels))
    return LabelSpace(spec.name, form, spec.label_names if form not in ("score", "count") else ())


def _short(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def check_gold(space: LabelSpace, value: Any) -> tuple[Gold | None, str | None]:
    """The gold value in its evaluated form, or a problem (which never quotes the text)."""
    labels = ", ".join(space.labels)
    if space.form == "single_label":
        if not isinstance(value, str):
            return None, f"must be one label (a string), not {type(value).__name__}"
        if value not in space.labels:
            return None, f"{_short(value)} is not one of its labels ({labels})"
        return value, None
    if space.form == "multilabel":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None, f"must be a list of labels ([] for none), not {type(value).__name__}"
        unknown = [v for v in value if v not in space.labels]
        if unknown:
            return None, f"{_short(unknown[0])} is not one of its labels ({labels})"
        if len(set(value)) != len(value):
            return None, "lists a label twice"
        return frozenset(value), None
    if space.form == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None, f"must be a count (an integer >= 0), not {_short(value)}"
        return float(value), None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"must be a number in [0, 1], not {type(value).__name__}"
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return None, f"{value!r} is outside [0, 1]"
    return float(value), None


def _parse_line(line_no: int, raw: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"line {line_no}: not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        return None, f"line {line_no}: must be a JSON object, not {type(row).__name__}"
    extra = sorted(set(row) - ROW_KEYS)
    if extra:
        return None, f"line {line_no}: unknown keys {', '.join(map(_short, extra))}"
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        return None, f"line {line_no}: 'text' must be a non-empty string"
    if not isinstance(row.get("labels"), dict) or not row["labels"]:
        return None, f"line {line_no}: 'labels' must be a non-empty object"
    split = row.get("split")
    if split is not None and split not in SPLITS:
        return None, f"line {line_no}: 'split' must be one of {', '.join(SPLITS)}"
    return row, None


def parse_rows(
    path: Path,
    lines: Iterable[str],
    spaces: Mapping[str, LabelSpace | None],
    only: Sequence[str] | None = None,
) -> list[EvalRow]:
    """Every row of the file, validated against the capabilities' label spaces.

    `spaces` maps every known capability to its label space (None: a kind that cannot be
    evaluated); with `only`, the gold values of other capabilities are not read at all (a file
    may then hold golds of capabilities this configuration lacks). Raises DatasetError listing
    every problem found.
    """
    rows: list[EvalRow] = []
    problems: list[str] = []
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        row, problem = _parse_line(line_no, raw)
        if row is None:
            problems.append(problem or f"line {line_no}: invalid")
            continue
        gold: dict[str, Gold] = {}
        for name, value in row["labels"].items():
            if only is not None and name not in only:
                continue
            where = f"line {line_no}: capability {_short(name)}"
            if name not in spaces:
                known = ", ".join(sorted(spaces))
                problems.append(f"{where} is unknown; known capabilities: {known}")
                continue
            space = spaces[name]
            if space is None:
                problems.append(f"{where}: its kind cannot be evaluated")
                continue
            checked, problem = check_gold(space, value)
            if problem is not None:
                problems.append(f"{where}: {problem}")
            elif checked is not None:
                gold[name] = checked
        rows.append(EvalRow(line_no, row["text"], gold, row.get("split")))
    if problems:
        raise DatasetError(path, problems)
    if not rows:
        raise DatasetError(path, ["holds no rows"])
    return rows


def select(
    path: Path, rows: Sequence[EvalRow], capabilities: Sequence[str] | None, split: str | None
) -> list[EvalRow]:
    """The rows of `split` (all rows when None), keeping only the chosen capabilities' gold
    values (all when None); rows left with none are dropped."""
    chosen = None if not capabilities else set(capabilities)
    problems = []
    if chosen is not None:
        labeled = {name for row in rows for name in row.gold}
        problems = [
            f"capability {_short(name)}: no row labels it" for name in sorted(chosen - labeled)
        ]
    kept = []
    for row in rows:
        if split is not None and row.split != split:
            continue
        gold = {k: v for k, v in row.gold.items() if chosen is None or k in chosen}
        if gold:
            kept.append(EvalRow(row.line, row.text, gold, row.split))
    if not problems and not kept:
        problems.append(f"no row of split {split!r} labels the chosen capabilities")
    if problems:
        raise DatasetError(path, problems)
    return kept


def load_dataset(
    path: Path,
    spaces: Mapping[str, LabelSpace | None],
    capabilities: Sequence[str] | None = None,
    split: str | None = None,
) -> list[EvalRow]:
    """Reads, validates and selects; raises DatasetError (or OSError for an unreadable file)."""
    unknown = sorted(set(capabilities or ()) - set(spaces))
    if unknown:
        known = ", ".join(sorted(spaces))
        raise DatasetError(
            path,
            [
                f"capability {_short(name)} is unknown; known capabilities: {known}"
                for name in unknown
            ],
        )
    with path.open(encoding="utf-8") as lines:
        rows = parse_rows(path, lines, spaces, capabilities or None)
    return select(path, rows, capabilities, split)
