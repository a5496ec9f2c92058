"""embedding_multilabel: one binary head per label, its training file, its result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import ProcessorInput, WindowContext
from processors.embedding_head import EmbeddingHeadProcessor
from processors.embedding_similarity import EmbeddingSimilarityProcessor, unit_rows
from processors.head_training import (
    Head,
    TrainingDataError,
    TrainingSet,
    cross_validated_f1,
    cross_validation_report,
    fit_head,
    head_path,
    load_saved_head,
    read_training_file,
    save_head,
    training_set,
)
from schemas.capability import CapabilityDefinition
from tests.unit.test_embedding_kinds import DIM, SECRET, FakeEngine, axis

LABELS = [{"name": "toxic", "threshold": 0.5}, {"name": "injection", "threshold": 0.5}]


def spec_of(tmp_path: Path, labels: Any = LABELS, **training: Any) -> CapabilitySpec:
    definition = CapabilityDefinition.model_validate(
        {
            "name": "guard",
            "kind": "embedding_multilabel",
            "model": "minilm",
            "labels": labels,
            "training": {"data": "guard.train.jsonl", **training},
        }
    )
    return CapabilitySpec.from_definition(definition, tmp_path / "guard.yaml")


def write_rows(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    lines = [json.dumps(row) for row in rows]
    (tmp_path / "guard.train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def multilabel_clusters(per: int, seed: int = 0) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Axis 0 carries toxic, axis 1 injection; each text has either, both or neither."""
    rng = np.random.default_rng(seed)
    rows, sets = [], []
    for labels in [(), ("toxic",), ("injection",), ("toxic", "injection")]:
        for _ in range(per):
            vector = np.array(axis((2, 1.0)))
            vector[0] += 1.5 if "toxic" in labels else 0.0
            vector[1] += 1.5 if "injection" in labels else 0.0
            rows.append(vector + rng.normal(0, 0.15, DIM))
            sets.append(labels)
    return unit_rows(np.array(rows)), sets


def test_multilabel_rows_read_a_list_of_labels_and_name_bad_lines_only(tmp_path):
    write_rows(
        tmp_path,
        [
            {"text": "both", "labels": ["toxic", "injection", "toxic"]},
            {"text": "none", "labels": []},
            {"text": SECRET, "labels": "toxic"},
            {"text": SECRET, "labels": ["unknown"]},
            {"text": SECRET, "label": "toxic"},
        ],
    )
    with pytest.raises(TrainingDataError) as caught:
        read_training_file(tmp_path / "guard.train.jsonl", ("toxic", "injection"), True)
    message = str(caught.value)
    assert SECRET not in message
    assert "line 3: 'labels' must be a list of strings" in message
    assert "line 4: label 'unknown' is not one of the labels" in message
    assert "line 5: unknown keys ['label']" in message
    write_rows(tmp_path, [{"text": "both", "labels": ["toxic", "injection", "toxic"]}])
    rows = read_training_file(tmp_path / "guard.train.jsonl", ("toxic", "injection"), True)
    assert rows.label_sets == (("toxic", "injection"),)


def test_every_label_needs_examples_with_and_without_it(tmp_path):
    write_rows(tmp_path, [{"text": "a", "labels": ["toxic"]}, {"text": "b", "labels": ["toxic"]}])
    with pytest.raises(TrainingDataError) as caught:
        training_set(spec_of(tmp_path))
    assert "labels ['injection'] have no examples" in str(caught.value)
    assert "labels ['toxic'] have no example without them" in str(caught.value)


def test_each_label_gets_its_own_binary_head(tmp_path):
    spec = spec_of(tmp_path, c=10.0)
    vectors, sets = multilabel_clusters(12)
    examples = TrainingSet(tuple(str(i) for i in range(len(sets))), tuple(sets))
    head = fit_head(spec, vectors, examples)
    assert head.multilabel and head.classes == ("toxic", "injection")
    tests, gold = multilabel_clusters(4, seed=1)
    probabilities = head.probabilities(tests)
    predicted = [
        tuple(name for name, p in zip(head.classes, row, strict=True) if p >= 0.5)
        for row in probabilities
    ]
    assert predicted == gold
    # Independent probabilities: a text with both labels has both near 1 (no softmax).
    assert probabilities[-1].min() > 0.8
    scores = cross_validated_f1(spec, vectors, sets)
    assert set(scores) == {"toxic", "injection"} and min(f1 for f1, _ in scores.values()) > 0.9
    assert "F1 per label: toxic" in cross_validation_report(spec, vectors, examples)
    save_head(head_path(spec), head)
    loaded = load_saved_head(spec)
    assert loaded is not None and loaded.multilabel
    np.testing.assert_allclose(loaded.probabilities(tests), probabilities)


def test_a_single_label_head_file_is_not_loaded_for_a_multilabel_version(tmp_path):
    write_rows(tmp_path, [{"text": "x", "labels": []}])
    spec = spec_of(tmp_path)
    single = Head(("toxic", "injection"), np.zeros((2, DIM)), np.zeros(2), spec.version, 3)
    save_head(head_path(spec), single)
    assert load_saved_head(spec) is None


async def test_the_processor_reports_every_label_over_its_threshold(tmp_path):
    rows = [
        {"text": "t0", "labels": ["toxic"]},
        {"text": "t1", "labels": ["toxic"]},
        {"text": "i0", "labels": ["injection"]},
        {"text": "i1", "labels": ["injection"]},
        {"text": "n0", "labels": []},
        {"text": "n1", "labels": []},
    ]
    write_rows(tmp_path, rows)
    vectors = {
        "t0": axis((0, 1.0), (2, 0.5)),
        "t1": axis((0, 1.0), (3, 0.5)),
        "i0": axis((1, 1.0), (2, 0.5)),
        "i1": axis((1, 1.0), (3, 0.5)),
        "n0": axis((2, 1.0)),
        "n1": axis((3, 1.0)),
        "both": axis((0, 1.0), (1, 1.0)),
        "calm": axis((2, 1.0), (3, 1.0)),
    }
    labels = [{"name": "toxic", "threshold": 0.5}, {"name": "injection", "threshold": 0.5}]
    spec = spec_of(tmp_path, labels, c=100.0)
    engine = FakeEngine(vectors)
    processor = EmbeddingHeadProcessor(EmbeddingSimilarityProcessor(engine))  # type: ignore[arg-type]
    texts = [ProcessorInput(text, {}) for text in ("t0", "i1", "both", "calm")]
    results = await processor.run(spec, texts, WindowContext())
    assert all(isinstance(r, CapabilityResult) for r in results)
    found = [r.labels for r in results if isinstance(r, CapabilityResult)]
    assert found[0] == ("toxic",) and found[1] == ("injection",) and found[3] == ()
    assert found[2] is not None and set(found[2]) == {"toxic", "injection"}
    calm = results[3]
    assert isinstance(calm, CapabilityResult) and calm.label is None
    assert min(calm.probabilities.values()) >= 0.0 and max(calm.probabilities.values()) < 0.5
