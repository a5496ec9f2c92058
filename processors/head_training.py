"""An `embedding_head`'s examples, its fitted logistic regression, and the saved head file.

Examples are the rows of `training.data` (JSONL beside the YAML, one {"text", "label"} a line)
plus the labels' `examples`. Problems name the line number, never the text. Fitting and
cross-validation are plain (blocking) functions: callers on the event loop run them in a thread.
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
    labels: tuple[str, ...]


def _parse_row(number: int, raw: str, known: Sequence[str]) -> tuple[str, str] | str:
    """(text, label), or the problem with this line."""
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        return f"line {number}: must be a JSON object, not {type(row).__name__}"
    extra = sorted(set(row) - {"text", "label"})
    if extra:
        return f"line {number}: unknown keys {extra}"
    text, label = row.get("text"), row.get("label")
    if not isinstance(text, str) or not text.strip():
        return f"line {number}: 'text' must be a non-empty string"
    if not isinstance(label, str):
        return f"line {number}: 'label' must be a string"
    if label not in known:
        shown = label if len(label) <= 40 else label[:37] + "..."
        return f"line {number}: label {shown!r} is not one of the labels ({', '.join(known)})"
    return text, label


def read_training_file(path: Path, known: Sequence[str]) -> TrainingSet:
    """Every row of a training JSONL file; raises TrainingDataError listing every problem."""
    texts: list[str] = []
    labels: list[str] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            parsed = _parse_row(number, raw, known)
            if isinstance(parsed, str):
                problems.append(parsed)
            else:
                texts.append(parsed[0])
                labels.append(parsed[1])
    if problems:
        raise TrainingDataError(path.name, problems)
    return TrainingSet(tuple(texts), tuple(labels))


def training_set(spec: CapabilitySpec) -> TrainingSet:
    """The file's rows and the labels' examples; every label needs one at least."""
    path = training_data_path(spec)
    from_file = read_training_file(path, spec.label_names) if path else TrainingSet((), ())
    texts = [*from_file.texts, *(e for label in spec.labels for e in label.examples)]
    labels = [*from_file.labels, *(label.name for label in spec.labels for _ in label.examples)]
    missing = [name for name in spec.label_names if name not in labels]
    if missing:
        raise TrainingDataError(f"capability '{spec.name}'", [f"labels {missing} have no examples"])
    return TrainingSet(tuple(texts), tuple(labels))


@dataclass(frozen=True)
class Head:
    """A multinomial logistic regression over unit-normalised embeddings, one row per class."""

    classes: tuple[str, ...]
    coefficients: np.ndarray  # (classes, dim)
    intercepts: np.ndarray  # (classes,)
    version: str  # the capability version it was trained for
    examples: int

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(texts, dim) -> (texts, classes)."""
        return softmax_rows(unit_rows(vectors) @ self.coefficients.T + self.intercepts)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "examples": self.examples,
            "classes": list(self.classes),
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
        return cls(classes, coefficients, intercepts, str(data["version"]), int(data["examples"]))


def _classifier(spec: CapabilitySpec) -> Any:
    from sklearn.linear_model import LogisticRegression

    training = spec.definition.training
    c = training.c if training is not None else 1.0
    class_weight = training.class_weight if training is not None else "balanced"
    return LogisticRegression(C=c, class_weight=class_weight, max_iter=MAX_ITER)


def fit_head(spec: CapabilitySpec, vectors: np.ndarray, labels: Sequence[str]) -> Head:
    """Fits the head (blocking: run it in a thread). Classes follow the capability's labels."""
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


def save_head(path: Path, head: Head) -> None:
    path.write_text(json.dumps(head.to_json()) + "\n", encoding="utf-8")


def load_saved_head(spec: CapabilitySpec) -> Head | None:
    """The saved head, if there is one and it was trained for this version of the capability
    (its definition, model and training data); None otherwise (also for an unreadable file,
    which is logged: the head is then trained again)."""
    path = head_path(spec)
    if not path.is_file():
        return None
    try:
        head = Head.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("'%s': saved head %s unreadable (%s)", spec.name, path.name, type(exc).__name__)
        return None
    return head if head.version == spec.version and head.classes == spec.label_names else None


Embed = Callable[[Sequence[str]], Awaitable[np.ndarray]]


async def embedded_examples(spec: CapabilitySpec, embed: Embed) -> tuple[np.ndarray, TrainingSet]:
    """The examples and their embeddings (the file is read off the event loop)."""
    examples = await asyncio.to_thread(training_set, spec)
    return await embed(examples.texts), examples
