"""A head's examples, its fitted logistic regression, and the saved head file.

`embedding_head` fits one multinomial regression (one label per text); `embedding_multilabel`
one binary regression per label (each text has any number of the labels). Examples are the rows
of `training.data` (JSONL beside the YAML, one {"text", "label"} a line, or {"text", "labels"}
for a multilabel head) plus the labels' `examples`. Problems name the line number, never the
text. Fitting and cross-validation are plain (blocking) functions: callers on the event loop run
them in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from capabilities.kind_checks import training_data_path
from capabilities.spec import CapabilitySpec
from processors.embedding_similarity import softmax_rows, unit_rows

log = logging.getLogger(__name__)

# lbfgs on unit-normalised embeddings converges in tens to hundreds of iterations; this bound
# only stops a pathological fit (e.g. a very large C) from running for ever.
MAX_ITER = 5000
CROSS_VALIDATION_FOLDS = 5
HEAD_SUFFIX = ".head.json"
# Heads of this many versions of a capability stay in its head file (newest first).
MAX_SAVED_VERSIONS = 4
# What reading a damaged head file raises.
_UNREADABLE = (OSError, ValueError, KeyError, TypeError)
MAX_PROBLEMS_SHOWN = 20


class TrainingDataError(ValueError):
    """The examples cannot be used; one problem a line, naming the file's line numbers."""

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = [f"{where}: {problem}" for problem in self.problems[:MAX_PROBLEMS_SHOWN]]
        if len(self.problems) > len(shown):
            shown.append(f"... and {len(self.problems) - len(shown)} more problems")
        super().__init__("\n".join(shown))


@dataclass(frozen=True)
class TrainingSet:
    texts: tuple[str, ...]
    # Each text's labels: exactly one for a single-label head, any number for a multilabel one.
    label_sets: tuple[tuple[str, ...], ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """Each text's one label (single-label heads)."""
        return tuple(labels[0] for labels in self.label_sets)


def _unknown_label(number: int, label: str, known: Sequence[str]) -> str:
    shown = label if len(label) <= 40 else label[:37] + "..."
    return f"line {number}: label {shown!r} is not one of the labels ({', '.join(known)})"


def _parse_row(
    number: int, raw: str, known: Sequence[str], multilabel: bool
) -> tuple[str, tuple[str, ...]] | str:
    """(text, its labels), or the problem with this line."""
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        return f"line {number}: must be a JSON object, not {type(row).__name__}"
    key = "labels" if multilabel else "label"
    extra = sorted(set(row) - {"text", key})
    if extra:
        return f"line {number}: unknown keys {extra}"
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        return f"line {number}: 'text' must be a non-empty string"
    value = row.get(key)
    if multilabel:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"line {number}: 'labels' must be a list of strings ([] for none)"
        labels = tuple(dict.fromkeys(value))
    elif isinstance(value, str):
        labels = (value,)
    else:
        return f"line {number}: 'label' must be a string"
    unknown = [label for label in labels if label not in known]
    return _unknown_label(number, unknown[0], known) if unknown else (text, labels)


def read_training_file(path: Path, known: Sequence[str], multilabel: bool = False) -> TrainingSet:
    """Every row of a training JSONL file; raises TrainingDataError listing every problem."""
    texts: list[str] = []
    label_sets: list[tuple[str, ...]] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            parsed = _parse_row(number, raw, known, multilabel)
            if isinstance(parsed, str):
                problems.append(parsed)
            else:
                texts.append(parsed[0])
                label_sets.append(parsed[1])
    if problems:
        raise TrainingDataError(path.name, problems)
    return TrainingSet(tuple(texts), tuple(label_sets))


def is_multilabel(spec: CapabilitySpec) -> bool:
    return spec.kind == "embedding_multilabel"


def training_set(spec: CapabilitySpec) -> TrainingSet:
    """The file's rows and the labels' examples. Every label needs an example; a multilabel
    head also needs, for every label, an example without it."""
    path = training_data_path(spec)
    multilabel = is_multilabel(spec)
    from_file = (
        read_training_file(path, spec.label_names, multilabel) if path else TrainingSet((), ())
    )
    texts = [*from_file.texts, *(e for label in spec.labels for e in label.examples)]
    label_sets = [
        *from_file.label_sets,
        *((label.name,) for label in spec.labels for _ in label.examples),
    ]
    problems = []
    missing = [name for name in spec.label_names if not any(name in ls for ls in label_sets)]
    if missing:
        problems.append(f"labels {missing} have no examples")
    if multilabel:
        always = [name for name in spec.label_names if all(name in ls for ls in label_sets)]
        if always:
            problems.append(f"labels {always} have no example without them")
    if problems:
        raise TrainingDataError(f"capability '{spec.name}'", problems)
    return TrainingSet(tuple(texts), tuple(label_sets))


@dataclass(frozen=True)
class Head:
    """A logistic regression over unit-normalised embeddings, one row per class: multinomial
    (the classes' probabilities sum to 1), or with `multilabel` one binary regression per class
    (each probability on its own)."""

    classes: tuple[str, ...]
    coefficients: np.ndarray  # (classes, dim)
    intercepts: np.ndarray  # (classes,)
    version: str  # the capability version it was trained for
    examples: int
    multilabel: bool = False

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(texts, dim) -> (texts, classes)."""
        logits = unit_rows(vectors) @ self.coefficients.T + self.intercepts
        if self.multilabel:
            return np.asarray(1.0 / (1.0 + np.exp(-logits)))
        return softmax_rows(logits)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "examples": self.examples,
            "classes": list(self.classes),
            "multilabel": self.multilabel,
            "coefficients": self.coefficients.tolist(),
            "intercepts": self.intercepts.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Head:
        coefficients = np.asarray(data["coefficients"], dtype=np.float64)
        intercepts = np.asarray(data["intercepts"], dtype=np.float64)
        classes = tuple(str(c) for c in data["classes"])
        if coefficients.shape[0] != len(classes) or intercepts.shape != (len(classes),):
            raise ValueError("head file: coefficients and intercepts do not match the classes")
        return cls(
            classes,
            coefficients,
            intercepts,
            str(data["version"]),
            int(data["examples"]),
            bool(data.get("multilabel", False)),
        )


def _classifier(spec: CapabilitySpec) -> Any:
    from sklearn.linear_model import LogisticRegression

    training = spec.definition.training
    c = training.c if training is not None else 1.0
    class_weight = training.class_weight if training is not None else "balanced"
    return LogisticRegression(C=c, class_weight=class_weight, max_iter=MAX_ITER)


def fit_head(spec: CapabilitySpec, vectors: np.ndarray, examples: TrainingSet) -> Head:
    """Fits the head of the capability's kind (blocking: run it in a thread)."""
    if is_multilabel(spec):
        return fit_multilabel_head(spec, vectors, examples.label_sets)
    return fit_single_label_head(spec, vectors, examples.labels)


def _has_label(label_sets: Sequence[Sequence[str]], name: str) -> list[bool]:
    return [name in labels for labels in label_sets]


def fit_multilabel_head(
    spec: CapabilitySpec, vectors: np.ndarray, label_sets: Sequence[Sequence[str]]
) -> Head:
    """One binary regression per label (label present or not), in the capability's order."""
    units = unit_rows(vectors)
    rows, intercepts = [], []
    for name in spec.label_names:
        model = _classifier(spec).fit(units, _has_label(label_sets, name))
        rows.append(np.asarray(model.coef_[0], dtype=np.float64))
        intercepts.append(float(model.intercept_[0]))
    return Head(
        spec.label_names,
        np.vstack(rows),
        np.asarray(intercepts, dtype=np.float64),
        spec.version,
        len(label_sets),
        multilabel=True,
    )


def fit_single_label_head(spec: CapabilitySpec, vectors: np.ndarray, labels: Sequence[str]) -> Head:
    """One multinomial regression; its classes follow the capability's labels."""
    model = _classifier(spec).fit(unit_rows(vectors), list(labels))
    order = [list(model.classes_).index(name) for name in spec.label_names]
    coefficients = np.asarray(model.coef_, dtype=np.float64)
    intercepts = np.asarray(model.intercept_, dtype=np.float64)
    if coefficients.shape[0] == 1:
        # Two classes: sklearn keeps one row, for the second class; as two rows of half the
        # logit each, the softmax gives the same sigmoid.
        coefficients = np.vstack([-coefficients[0] / 2, coefficients[0] / 2])
        intercepts = np.array([-intercepts[0] / 2, intercepts[0] / 2])
    return Head(spec.label_names, coefficients[order], intercepts[order], spec.version, len(labels))


def cross_validation_report(
    spec: CapabilitySpec, vectors: np.ndarray, examples: TrainingSet
) -> str:
    """The stratified k-fold figure of the head's kind: accuracy, or each label's F1."""
    if not is_multilabel(spec):
        accuracy, folds = cross_validated_accuracy(spec, vectors, examples.labels)
        return f"{folds}-fold stratified cross-validated accuracy {accuracy:.3f}"
    scores = cross_validated_f1(spec, vectors, examples.label_sets)
    shown = ", ".join(f"{name} {f1:.3f}" for name, (f1, _folds) in scores.items())
    folds = min(folds for _f1, folds in scores.values())
    return f"{folds}-fold stratified cross-validated F1 per label: {shown}"


def cross_validated_f1(
    spec: CapabilitySpec, vectors: np.ndarray, label_sets: Sequence[Sequence[str]]
) -> dict[str, tuple[float, int]]:
    """Each label's binary head: its F1 over k stratified folds (k = 5, or fewer), and k."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    units = unit_rows(vectors)
    scores: dict[str, tuple[float, int]] = {}
    for name in spec.label_names:
        target = _has_label(label_sets, name)
        folds = min(CROSS_VALIDATION_FOLDS, sum(target), len(target) - sum(target))
        if folds < 2:
            raise TrainingDataError(
                f"capability '{spec.name}'",
                [f"cross-validation needs two examples with and two without '{name}'"],
            )
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
        f1 = cross_val_score(_classifier(spec), units, target, cv=splitter, scoring="f1")
        scores[name] = (float(np.mean(f1)), folds)
    return scores


def cross_validated_accuracy(
    spec: CapabilitySpec, vectors: np.ndarray, labels: Sequence[str]
) -> tuple[float, int]:
    """Stratified k-fold accuracy (k = 5, or fewer when a label has fewer examples), and k."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    folds = min(CROSS_VALIDATION_FOLDS, min(Counter(labels).values()))
    if folds < 2:
        raise TrainingDataError(
            f"capability '{spec.name}'", ["cross-validation needs two examples of every label"]
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    scores = cross_val_score(_classifier(spec), unit_rows(vectors), list(labels), cv=splitter)
    return float(np.mean(scores)), folds


def head_path(spec: CapabilitySpec) -> Path:
    """`<name>.head.json` beside the capability's YAML file."""
    return spec.source.parent / f"{spec.name}{HEAD_SUFFIX}"


def saved_heads(path: Path) -> list[Head]:
    """Every head the file holds, newest first: `{"heads": [...]}`, or one head alone (the
    format before several versions were kept). Raises one of _UNREADABLE when damaged."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("head file: not an object")
    entries = data.get("heads", [data])
    if not isinstance(entries, list):
        raise ValueError("head file: 'heads' is not a list")
    return [Head.from_json(entry) for entry in entries]


def save_head(path: Path, head: Head) -> None:
    """Adds the head to the file, replacing one of the same version and keeping the
    MAX_SAVED_VERSIONS newest: a pack trained on bfloat16 and on float32 machines (the dtype is
    part of a version) keeps a head for each. An unreadable file is replaced."""
    kept: list[Head] = []
    if path.is_file():
        try:
            kept = [h for h in saved_heads(path) if h.version != head.version]
        except _UNREADABLE:
            kept = []
    heads = [head, *kept][:MAX_SAVED_VERSIONS]
    body = {"heads": [h.to_json() for h in heads]}
    path.write_text(json.dumps(body) + "\n", encoding="utf-8")


def load_saved_head(spec: CapabilitySpec) -> Head | None:
    """The saved head trained for this version of the capability (its definition, model, dtype
    and training data), if the file holds one; None otherwise (also for an unreadable file,
    which is logged: the head is then trained again)."""
    path = head_path(spec)
    if not path.is_file():
        return None
    try:
        heads = saved_heads(path)
    except _UNREADABLE as exc:
        log.warning("'%s': saved head %s unreadable (%s)", spec.name, path.name, type(exc).__name__)
        return None
    for head in heads:
        fits = head.classes == spec.label_names and head.multilabel == is_multilabel(spec)
        if head.version == spec.version and fits:
            return head
    return None


Embed = Callable[[Sequence[str]], Awaitable[np.ndarray]]


async def embedded_examples(spec: CapabilitySpec, embed: Embed) -> tuple[np.ndarray, TrainingSet]:
    """The examples and their embeddings (the file is read off the event loop)."""
    examples = await asyncio.to_thread(training_set, spec)
    return await embed(examples.texts), examples
