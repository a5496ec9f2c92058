"""Which kind should the pack's `task_type` be? Measured, tuned on the training file only.

    .venv/bin/python -m bench.task_type_kinds [--config PATH]

Every method is scored by 5-fold stratified cross-validation (3 shuffles) on task_type's
training file (`configs/capabilities/task_type.train.jsonl`); the best cross-validated method is
chosen.
The held-out accuracy (`benchmarks/data/task_types.jsonl`, every method trained on the whole
training file) is reported beside it for the record, never used to choose. Methods:
zero-shot similarity to the label descriptions; few-shot similarity to the descriptions plus
the training examples (nearest example, or each label's centroid); embedding_head with a few C
values, with and without class balancing. Only the embedding model's engine starts; the maths
are the server's own (prototypes, calibration, head fitting). Writes
`benchmarks/task_type_kinds.md` and `.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from capabilities.spec import CapabilitySpec
from processors.embedding_similarity import PrototypeText, build_prototypes
from processors.head_training import fit_single_label_head, read_training_file
from schemas.capability import TrainingDefinition
from server.commands.train import embed_on_model
from server.registry_loading import load_registry
from server.settings import load_config

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = REPO / "benchmarks" / "data" / "task_types.jsonl"
OUTPUT = REPO / "benchmarks" / "task_type_kinds.json"
CAPABILITY = "task_type"
FOLDS = 5
REPEATS = 3
HEAD_C = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)

Predict = Callable[[np.ndarray], list[str]]
# Fits a method on (training vectors, their labels) and returns its predictor.
Fit = Callable[[np.ndarray, Sequence[str]], Predict]


@dataclass(frozen=True)
class Method:
    name: str
    kind: str
    settings: dict[str, Any]
    fit: Fit


@dataclass(frozen=True)
class Descriptions:
    """The labels' descriptions, as the capability states them, and their embeddings."""

    texts: tuple[PrototypeText, ...]
    vectors: np.ndarray


def similarity_method(
    spec: CapabilitySpec, descriptions: Descriptions, prototype: str, shots: bool
) -> Method:
    definition = spec.definition.model_copy(update={"prototype": prototype, "calibrate": False})

    def fit(vectors: np.ndarray, labels: Sequence[str]) -> Predict:
        texts = list(descriptions.texts)
        stacked = descriptions.vectors
        if shots:
            texts += [PrototypeText(label, "", True) for label in labels]
            stacked = np.vstack([stacked, vectors])
        prototypes = build_prototypes(definition, texts, stacked)
        return lambda queries: [
            prototypes.names[int(i)] for i in prototypes.probabilities(queries).argmax(axis=1)
        ]

    name = (
        f"few-shot similarity, {prototype} (descriptions + training examples)"
        if shots
        else "zero-shot similarity to the descriptions"
    )
    return Method(name, "embedding_similarity", {"prototype": prototype}, fit)


def head_method(spec: CapabilitySpec, c: float, class_weight: Literal["balanced"] | None) -> Method:
    training = TrainingDefinition(data="(training file)", c=c, class_weight=class_weight)
    definition = spec.definition.model_copy(update={"training": training})
    trained = CapabilitySpec.from_definition(definition, spec.source)

    def fit(vectors: np.ndarray, labels: Sequence[str]) -> Predict:
        head = fit_single_label_head(trained, vectors, labels)
        return lambda queries: [
            head.classes[int(i)] for i in head.probabilities(queries).argmax(axis=1)
        ]

    settings = {"c": c, "class_weight": class_weight}
    return Method(
        f"embedding_head C={c:g} class_weight={class_weight}", "embedding_head", settings, fit
    )


def methods(spec: CapabilitySpec, descriptions: Descriptions) -> list[Method]:
    found = [
        similarity_method(spec, descriptions, "nearest", shots=False),
        similarity_method(spec, descriptions, "nearest", shots=True),
        similarity_method(spec, descriptions, "centroid", shots=True),
    ]
    found += [head_method(spec, c, "balanced") for c in HEAD_C]
    found += [head_method(spec, c, None) for c in HEAD_C]
    return found


def cross_validated(method: Method, vectors: np.ndarray, labels: Sequence[str]) -> float:
    """Accuracy of the out-of-fold predictions of stratified k-fold, repeated with other
    shuffles so that close methods are told apart by more than one split's luck."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    splitter = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=REPEATS, random_state=0)
    gold = np.asarray(labels)
    correct = 0
    for train, test in splitter.split(vectors, gold):
        predicted = method.fit(vectors[train], list(gold[train]))(vectors[test])
        correct += sum(p == g for p, g in zip(predicted, gold[test], strict=True))
    return correct / (len(labels) * REPEATS)


def held_out_accuracy(
    method: Method, train: tuple[np.ndarray, Sequence[str]], test: tuple[np.ndarray, Sequence[str]]
) -> float:
    predicted = method.fit(*train)(test[0])
    return sum(p == g for p, g in zip(predicted, test[1], strict=True)) / len(test[1])


def read_held_out(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.strip():
            row = json.loads(raw)
            if CAPABILITY in row["labels"]:
                texts.append(row["text"])
                labels.append(row["labels"][CAPABILITY])
    return texts, labels


def report(result: dict[str, Any]) -> str:
    lines = [
        f"`{CAPABILITY}`: {result['training_examples']} training examples "
        f"({FOLDS}-fold stratified cross-validation, {REPEATS} shuffles), "
        f"{result['held_out_examples']} held-out.",
        "The method is chosen by cross-validated accuracy only; held-out accuracy is for the "
        "record. The training file has 30 examples of every type, so class balancing changes "
        "nothing.",
        "",
        "| method | kind | cross-validated accuracy | held-out accuracy |",
        "|---|---|---|---|",
    ]
    for row in result["methods"]:
        chosen = " **(chosen)**" if row["name"] == result["chosen"] else ""
        lines.append(
            f"| {row['name']}{chosen} | {row['kind']} | {row['cross_validated_accuracy']:.3f} "
            f"| {row['held_out_accuracy']:.3f} |"
        )
    return "\n".join(lines)


async def measure(config_path: Path | None) -> dict[str, Any]:
    config = load_config(config_path)
    spec = load_registry(config).get(CAPABILITY)
    assert spec.model is not None
    # The training file only: the labels' own examples would count twice in few-shot methods.
    path = spec.source.parent / "task_type.train.jsonl"
    examples = read_training_file(path, spec.label_names)
    held_texts, held_labels = read_held_out(HELD_OUT)
    described = [
        PrototypeText(label.name, label.description or label.name, False) for label in spec.labels
    ]
    texts = [*(p.text for p in described), *examples.texts, *held_texts]
    vectors = await embed_on_model(config, spec.model, texts, "the task type texts")
    described_vectors = vectors[: len(described)]
    train_vectors = vectors[len(described) : len(described) + len(examples.texts)]
    held_vectors = vectors[len(described) + len(examples.texts) :]
    descriptions = Descriptions(tuple(described), described_vectors)
    rows: list[dict[str, Any]] = []
    for method in methods(spec, descriptions):
        cv = await asyncio.to_thread(cross_validated, method, train_vectors, examples.labels)
        held = await asyncio.to_thread(
            held_out_accuracy,
            method,
            (train_vectors, examples.labels),
            (held_vectors, held_labels),
        )
        rows.append(
            {
                "name": method.name,
                "kind": method.kind,
                "settings": method.settings,
                "cross_validated_accuracy": round(cv, 4),
                "held_out_accuracy": round(held, 4),
            }
        )
        print(f"{method.name}: cv {cv:.3f}, held-out {held:.3f}", file=sys.stderr, flush=True)
    chosen = max(rows, key=lambda row: float(row["cross_validated_accuracy"]))
    return {
        "capability": CAPABILITY,
        "training_file": str(path.relative_to(REPO)),
        "held_out_file": str(HELD_OUT.relative_to(REPO)),
        "training_examples": len(examples.labels),
        "held_out_examples": len(held_labels),
        "folds": FOLDS,
        "repeats": REPEATS,
        "methods": rows,
        "chosen": chosen["name"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.task_type_kinds", description=__doc__)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.config))
    table = report(result)
    print(table)
    command = ".venv/bin/python -m bench.task_type_kinds " + " ".join(argv or sys.argv[1:])
    args.output.write_text(json.dumps({"command": command.strip(), **result}, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(f"Command: `{command.strip()}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
