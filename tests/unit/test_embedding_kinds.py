"""The embedding kinds on synthetic vectors (no engine): prototype maths, calibration, taxonomy
routing, head training and loading, training data errors, and their evaluation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capabilities.kind_checks import check_kind_fields
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from evaluation.dataset import label_space
from evaluation.metrics import taxonomy_metrics, taxonomy_prediction
from processors.base import ProcessorInput, WindowContext
from processors.embedding_head import EmbeddingHeadProcessor
from processors.embedding_similarity import (
    EmbeddingSimilarityProcessor,
    LabelPrototypes,
    PrototypeText,
    build_prototypes,
    fit_temperature,
    leave_one_out_scores,
    prototype_texts,
    softmax_rows,
    unit_rows,
)
from processors.head_training import (
    MAX_SAVED_VERSIONS,
    Head,
    TrainingDataError,
    cross_validated_accuracy,
    fit_single_label_head,
    head_path,
    load_saved_head,
    read_training_file,
    save_head,
    saved_heads,
    training_set,
)
from processors.taxonomy import ROOT, TaxonomyProcessor, build_taxonomy, parents, route
from schemas.capability import CapabilityDefinition

DIM = 8
SECRET = "SECRET PROMPT TEXT"


def axis(*weights: tuple[int, float]) -> list[float]:
    vector = [0.0] * DIM
    for index, weight in weights:
        vector[index] = weight
    return vector


class FakeEngine:
    """Embeds known texts as given vectors (unknown ones as a fixed noise vector), counting
    every text it embeds."""

    name = "fake"
    max_model_len = 512

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors
        self.texts: list[str] = []
        self.embedded: list[str] = []

    async def tokenize(
        self, texts: Sequence[str], truncate_to: int | None = None
    ) -> list[list[int]]:
        ids = []
        for text in texts:
            self.texts.append(text)
            ids.append([len(self.texts) - 1])
        return ids

    async def embed(self, prompt_token_ids: Sequence[int]) -> list[float]:
        text = self.texts[prompt_token_ids[0]]
        self.embedded.append(text)
        return self.vectors.get(text, [0.1] * DIM)


def spec_of(tmp_path: Path, **fields: Any) -> CapabilitySpec:
    definition = CapabilityDefinition.model_validate(
        {"name": "cap", "kind": "embedding_similarity", "model": "minilm", **fields}
    )
    return CapabilitySpec.from_definition(definition, tmp_path / "cap.yaml")


def inputs(*texts: str) -> list[ProcessorInput]:
    return [ProcessorInput(text, {}) for text in texts]


# --- prototypes and calibration ---------------------------------------------------------------


def test_prototype_texts_hold_descriptions_examples_and_descendants(tmp_path):
    spec = spec_of(
        tmp_path,
        labels=[
            {"name": "a", "description": "about a", "examples": ["a1"]},
            {"name": "b_b", "children": [{"name": "c", "examples": ["c1"]}, "d"]},
        ],
    )
    texts = prototype_texts(spec.labels)
    assert [(p.owner, p.text, p.example) for p in texts] == [
        ("a", "about a", False),
        ("a", "a1", True),
        ("b_b", "b b", False),  # no description: the name stands for the label
        ("b_b", "c", True),
        ("b_b", "c1", True),
        ("b_b", "d", True),
    ]


def test_centroid_is_the_renormalised_mean_and_nearest_keeps_every_prototype(tmp_path):
    texts = [
        PrototypeText("x", "x", False),
        PrototypeText("x", "x1", True),
        PrototypeText("y", "y", False),
    ]
    vectors = unit_rows(np.array([axis((0, 1.0)), axis((1, 1.0)), axis((2, 1.0))]))
    centroid = build_prototypes(spec_of(tmp_path, prototype="centroid").definition, texts, vectors)
    expected = np.array(axis((0, 1.0), (1, 1.0))) / np.sqrt(2)
    assert centroid.matrix.shape == (2, DIM)
    np.testing.assert_allclose(centroid.matrix[0], expected, atol=1e-6)
    nearest = build_prototypes(spec_of(tmp_path).definition, texts, vectors)
    assert nearest.matrix.shape == (3, DIM) and list(nearest.owners) == [0, 0, 1]
    # A text on x1 matches x's example fully under nearest, but the centroid only by cos 45°.
    query = unit_rows(np.array([axis((1, 1.0))]))
    near = nearest.probabilities_from(query @ nearest.matrix.T)
    cent = centroid.probabilities_from(query @ centroid.matrix.T)
    logits = np.array([[1.0, 0.0], [1 / np.sqrt(2), 0.0]]) / 0.05
    np.testing.assert_allclose(near[0], softmax_rows(logits[:1])[0], rtol=1e-5)
    np.testing.assert_allclose(cent[0], softmax_rows(logits[1:])[0], rtol=1e-4)


def test_leave_one_out_scores_never_see_the_left_out_example():
    vectors = unit_rows(np.array([axis((0, 1.0)), axis((1, 1.0)), axis((0, 1.0), (2, 1.0))]))
    owners = np.array([0, 0, 1])
    examples = np.array([False, True, True])
    nearest = leave_one_out_scores(owners, vectors, examples, 2, "nearest")
    # Example 1 (label 0) sees only label 0's description (orthogonal) and label 1 (orthogonal).
    np.testing.assert_allclose(nearest[0], [0.0, 0.0], atol=1e-6)
    # Example 2 (label 1) is label 1's only example: only label 0 is left to match it.
    np.testing.assert_allclose(nearest[1], [1 / np.sqrt(2), -np.inf], atol=1e-6)
    centroid = leave_one_out_scores(owners, vectors, examples, 2, "centroid")
    # Without example 1, label 0's centroid is its description alone.
    np.testing.assert_allclose(centroid[0], [0.0, 0.0], atol=1e-6)
    # Example 2 meets label 0's whole centroid, (e0 + e1) / sqrt 2.
    np.testing.assert_allclose(centroid[1, 0], 0.5, atol=1e-6)


def _nll(scores: np.ndarray, gold: np.ndarray, temperature: float) -> float:
    probabilities = softmax_rows(scores / temperature)
    return float(-np.mean(np.log(probabilities[np.arange(len(gold)), gold])))


def test_fit_temperature_picks_the_grid_point_with_the_lowest_nll():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 0.6, size=(200, 4))
    gold = np.where(rng.uniform(size=200) < 0.7, scores.argmax(axis=1), rng.integers(0, 4, 200))
    grid = (0.01, 0.03, 0.1, 0.3, 1.0)
    chosen = fit_temperature(scores, gold, grid)
    assert chosen == min(grid, key=lambda t: _nll(scores, gold, t))
    assert 0.01 < chosen < 1.0  # confident but not always right: neither extreme


def test_fit_temperature_sharpens_when_always_right_and_flattens_when_never():
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    grid = (0.01, 0.1, 1.0)
    assert fit_temperature(scores, np.array([0, 1]), grid) == 0.01
    assert fit_temperature(scores, np.array([1, 0]), grid) == 1.0


def _two_labels(examples_per_label: int) -> tuple[list[PrototypeText], np.ndarray]:
    texts, rows = [], []
    rng = np.random.default_rng(1)
    for label, index in (("x", 0), ("y", 1)):
        texts.append(PrototypeText(label, label, False))
        rows.append(axis((index, 1.0)))
        for n in range(examples_per_label):
            texts.append(PrototypeText(label, f"{label}{n}", True))
            rows.append(list(np.array(axis((index, 1.0))) + rng.normal(0, 0.3, DIM)))
    return texts, unit_rows(np.array(rows))


def test_calibration_needs_the_flag_and_two_examples_per_label(tmp_path):
    texts, vectors = _two_labels(2)
    calibrated = build_prototypes(spec_of(tmp_path, calibrate=True).definition, texts, vectors)
    assert calibrated.calibrated and calibrated.temperature != 0.05
    assert calibrated.details() == {"temperature": calibrated.temperature, "calibrated": True}
    off = build_prototypes(spec_of(tmp_path).definition, texts, vectors)
    assert not off.calibrated and off.temperature == 0.05
    few_texts, few_vectors = _two_labels(1)
    few = build_prototypes(spec_of(tmp_path, calibrate=True).definition, few_texts, few_vectors)
    assert not few.calibrated and few.temperature == 0.05


def test_calibrate_is_allowed_on_the_embedding_kinds(tmp_path):
    labels = [{"name": "a", "examples": ["x"]}, "b"]
    for kind in ("embedding_similarity", "embedding_head"):
        assert check_kind_fields(spec_of(tmp_path, kind=kind, labels=labels, calibrate=True)) == []
    rule = spec_of(tmp_path, kind="rule", model=None, labels=labels, calibrate=True)
    assert any("calibrate" in problem for problem in check_kind_fields(rule))


async def test_calibrated_similarity_reports_its_temperature(tmp_path):
    labels = [
        {"name": "x", "examples": ["x0", "x1"]},
        {"name": "y", "examples": ["y0", "y1"]},
    ]
    vectors = {
        "x": axis((0, 1.0)),
        "x0": axis((0, 1.0), (2, 0.5)),
        "x1": axis((0, 1.0), (3, 0.5)),
        "y": axis((1, 1.0)),
        "y0": axis((1, 1.0), (2, 0.5)),
        "y1": axis((1, 1.0), (4, 0.5)),
        "query": axis((0, 1.0), (1, 0.2)),
    }
    spec = spec_of(tmp_path, labels=labels, calibrate=True, prototype="centroid")
    processor = EmbeddingSimilarityProcessor(FakeEngine(vectors))  # type: ignore[arg-type]
    (result,) = await processor.run(spec, inputs("query"), WindowContext())
    assert isinstance(result, CapabilityResult) and result.label == "x"
    assert result.details["calibrated"] is True
    assert result.details["temperature"] != 0.05


# --- taxonomies ---------------------------------------------------------------------------------

TREE = [
    {
        "name": "animal",
        "description": "animal",
        "children": [
            {"name": "cat", "description": "cat"},
            {"name": "dog", "description": "dog"},
        ],
    },
    {
        "name": "vehicle",
        "description": "vehicle",
        "children": [
            {"name": "car", "description": "car"},
            {
                "name": "bike",
                "description": "bike",
                "children": [
                    {"name": "road_bike", "description": "road bike"},
                    {"name": "mountain_bike", "description": "mountain bike"},
                ],
            },
        ],
    },
]
TREE_VECTORS = {
    "animal": axis((0, 1.0)),
    "cat": axis((0, 1.0), (1, 1.0)),
    "dog": axis((0, 1.0), (2, 1.0)),
    "vehicle": axis((3, 1.0)),
    "car": axis((3, 1.0), (4, 1.0)),
    "bike": axis((3, 1.0), (5, 1.0)),
    "road bike": axis((3, 1.0), (5, 1.0), (6, 1.0)),
    "mountain bike": axis((3, 1.0), (5, 1.0), (7, 1.0)),
    "a kitten": axis((0, 1.0), (1, 1.2)),
    "a puppy": axis((0, 1.0), (2, 1.2)),
    "a sedan": axis((3, 1.0), (4, 1.2)),
    "a trail ride": axis((3, 0.6), (5, 0.8), (7, 1.2)),
}


def test_levels_are_every_node_with_children():
    spec = spec_of(Path("."), labels=TREE)
    levels = parents(spec.labels)
    assert {key: [c.name for c in children] for key, children in levels.items()} == {
        ROOT: ["animal", "vehicle"],
        "animal": ["cat", "dog"],
        "vehicle": ["car", "bike"],
        "bike": ["road_bike", "mountain_bike"],
    }


def test_route_classifies_each_level_once_per_node_batched(monkeypatch):
    spec = spec_of(Path("."), labels=TREE)
    vector_of = {text: np.array(v) / np.linalg.norm(v) for text, v in TREE_VECTORS.items()}
    taxonomy = build_taxonomy(spec.definition, parents(spec.labels), vector_of)
    calls: list[tuple[tuple[str, ...], int]] = []
    original = LabelPrototypes.probabilities

    def counted(self: LabelPrototypes, texts: np.ndarray) -> np.ndarray:
        calls.append((self.names, len(texts)))
        return original(self, texts)

    monkeypatch.setattr(LabelPrototypes, "probabilities", counted)
    queries = ["a kitten", "a sedan", "a puppy", "a trail ride"]
    routes = route(taxonomy, np.stack([vector_of[q] for q in queries]))
    assert [way.path for way in routes] == [
        ["animal", "cat"],
        ["vehicle", "car"],
        ["animal", "dog"],
        ["vehicle", "bike", "mountain_bike"],
    ]
    # One matrix product per node reached, with every text that reached it.
    assert sorted(calls) == sorted(
        [
            (("animal", "vehicle"), 4),
            (("cat", "dog"), 2),
            (("car", "bike"), 2),
            (("road_bike", "mountain_bike"), 1),
        ]
    )


async def test_taxonomy_result_has_the_path_levels_and_the_path_probability():
    spec = spec_of(Path("."), labels=TREE)
    engine = FakeEngine(TREE_VECTORS)
    processor = TaxonomyProcessor(EmbeddingSimilarityProcessor(engine))  # type: ignore[arg-type]
    results = await processor.run(spec, inputs("a trail ride", "a kitten"), WindowContext())
    trail, kitten = results
    assert isinstance(trail, CapabilityResult) and isinstance(kitten, CapabilityResult)
    assert trail.path == ("vehicle", "bike", "mountain_bike")
    assert trail.label == "mountain_bike"
    levels = trail.details["levels"]
    assert [level["label"] for level in levels] == list(trail.path)
    assert trail.confidence == pytest.approx(np.prod([lv["confidence"] for lv in levels]), 1e-5)
    assert trail.confidence < min(level["confidence"] for level in levels)
    assert set(trail.probabilities) == {"animal", "vehicle"}
    assert trail.probabilities["vehicle"] == pytest.approx(levels[0]["confidence"], 1e-5)
    assert kitten.path == ("animal", "cat")
    # Every text of the tree was embedded once, then the two texts.
    assert sorted(engine.embedded[:-2]) == sorted(set(engine.embedded[:-2]))
    assert engine.embedded[-2:] == ["a trail ride", "a kitten"]


def test_a_parent_is_recognised_by_its_childrens_meaning():
    # The parents' own descriptions are orthogonal to the query; only a child's matches.
    labels = [
        {"name": "p", "description": "p", "children": [{"name": "p1", "description": "p1"}, "p2"]},
        {"name": "q", "description": "q", "children": ["q1", "q2"]},
    ]
    vectors = {
        "p": axis((0, 1.0)),
        "p1": axis((5, 1.0)),
        "p2": axis((6, 1.0)),
        "q": axis((1, 1.0)),
        "q1": axis((2, 1.0)),
        "q2": axis((3, 1.0)),
    }
    spec = spec_of(Path("."), labels=labels)
    vector_of = {text: np.array(v) for text, v in vectors.items()}
    taxonomy = build_taxonomy(spec.definition, parents(spec.labels), vector_of)
    (way,) = route(taxonomy, np.array([axis((5, 1.0))]))
    assert way.path == ["p", "p1"]


# --- embedding_head ---------------------------------------------------------------------------


def clusters(per_label: int, labels: Sequence[str], seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    rows, names = [], []
    for index, label in enumerate(labels):
        for _ in range(per_label):
            rows.append(np.array(axis((index, 1.0))) + rng.normal(0, 0.2, DIM))
            names.append(label)
    return unit_rows(np.array(rows)), names


def head_spec(tmp_path: Path, labels: Sequence[Any], **training: Any) -> CapabilitySpec:
    return spec_of(tmp_path, kind="embedding_head", labels=labels, training=training or None)


def test_fit_head_separates_clusters_in_the_capabilitys_label_order(tmp_path):
    spec = head_spec(tmp_path, ["zeta", "alpha", "mid"], c=10.0)
    vectors, labels = clusters(10, ["zeta", "alpha", "mid"])
    head = fit_single_label_head(spec, vectors, labels)
    assert head.classes == ("zeta", "alpha", "mid")
    assert head.version == spec.version and head.examples == 30
    tests, gold = clusters(5, ["zeta", "alpha", "mid"], seed=1)
    probabilities = head.probabilities(tests)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert [head.classes[i] for i in probabilities.argmax(axis=1)] == gold


def test_a_two_class_head_gives_sklearns_probabilities(tmp_path):
    from sklearn.linear_model import LogisticRegression

    spec = head_spec(tmp_path, ["yes", "no"], c=1.0, class_weight=None)
    vectors, labels = clusters(8, ["no", "yes"])
    head = fit_single_label_head(spec, vectors, labels)
    reference = LogisticRegression(C=1.0, max_iter=5000).fit(vectors, labels)
    expected = reference.predict_proba(vectors)  # columns in sklearn's order: no, yes
    np.testing.assert_allclose(head.probabilities(vectors)[:, [1, 0]], expected, atol=1e-6)


def test_cross_validated_accuracy_uses_at_most_five_stratified_folds(tmp_path):
    spec = head_spec(tmp_path, ["a", "b"])
    vectors, labels = clusters(10, ["a", "b"])
    accuracy, folds = cross_validated_accuracy(spec, vectors, labels)
    assert folds == 5 and accuracy == 1.0
    few_vectors, few_labels = clusters(3, ["a", "b"])
    assert cross_validated_accuracy(spec, few_vectors, few_labels)[1] == 3


def write_jsonl(path: Path, lines: Sequence[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_training_set_reads_the_file_and_the_labels_examples(tmp_path):
    write_jsonl(
        tmp_path / "cap.train.jsonl",
        [json.dumps({"text": "one", "label": "a"}), "", json.dumps({"text": "two", "label": "b"})],
    )
    spec = head_spec(tmp_path, [{"name": "a", "examples": ["three"]}, "b"], data="cap.train.jsonl")
    examples = training_set(spec)
    assert examples.texts == ("one", "two", "three")
    assert examples.labels == ("a", "b", "a")


def test_training_file_problems_name_the_line_never_the_text(tmp_path):
    path = tmp_path / "cap.train.jsonl"
    write_jsonl(
        path,
        [
            json.dumps({"text": SECRET, "label": "a"}),
            f"{{not json {SECRET}",
            json.dumps({"text": SECRET, "label": "unknown"}),
            json.dumps({"text": "", "label": "a"}),
            json.dumps({"text": SECRET}),
            json.dumps([SECRET]),
            json.dumps({"text": SECRET, "label": "a", "note": "x"}),
        ],
    )
    with pytest.raises(TrainingDataError) as caught:
        read_training_file(path, ("a", "b"))
    message = str(caught.value)
    assert SECRET not in message
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
        "line 6",
        "line 7",
    ]
    assert "'unknown' is not one of the labels (a, b)" in message
    assert message.startswith("cap.train.jsonl: line 2:")


def test_every_label_needs_an_example(tmp_path):
    spec = head_spec(tmp_path, [{"name": "a", "examples": ["x"]}, "b"])
    with pytest.raises(TrainingDataError, match=r"labels \['b'\] have no examples"):
        training_set(spec)


def test_a_saved_head_is_used_only_for_its_version(tmp_path):
    spec = head_spec(tmp_path, ["a", "b"])
    vectors, labels = clusters(4, ["a", "b"])
    head = fit_single_label_head(spec, vectors, labels)
    assert load_saved_head(spec) is None
    save_head(head_path(spec), head)
    assert head_path(spec) == tmp_path / "cap.head.json"
    loaded = load_saved_head(spec)
    assert loaded is not None and loaded.classes == head.classes
    np.testing.assert_allclose(loaded.coefficients, head.coefficients)
    changed = head_spec(tmp_path, ["a", "b"], c=2.0)
    assert changed.version != spec.version and load_saved_head(changed) is None
    head_path(spec).write_text("{broken", encoding="utf-8")
    assert load_saved_head(spec) is None


def test_a_head_file_keeps_the_heads_of_several_versions_newest_first(tmp_path):
    """One trained on a bfloat16 machine and one on a float32 machine (the dtype is part of the
    version) live side by side; the oldest beyond MAX_SAVED_VERSIONS is dropped."""
    vectors, labels = clusters(4, ["a", "b"])
    specs = [head_spec(tmp_path, ["a", "b"], c=1.0 + i) for i in range(MAX_SAVED_VERSIONS + 1)]
    assert len({spec.version for spec in specs}) == len(specs)
    for spec in specs:
        save_head(head_path(spec), fit_single_label_head(spec, vectors, labels))
    kept = saved_heads(head_path(specs[0]))
    assert [h.version for h in kept] == [s.version for s in reversed(specs)][:MAX_SAVED_VERSIONS]
    assert load_saved_head(specs[0]) is None  # the oldest was dropped
    for spec in specs[1:]:
        loaded = load_saved_head(spec)
        assert loaded is not None and loaded.version == spec.version
    # Saving a version again replaces its entry instead of adding one.
    save_head(head_path(specs[2]), fit_single_label_head(specs[2], vectors, labels))
    again = saved_heads(head_path(specs[0]))
    assert again[0].version == specs[2].version
    assert len(again) == MAX_SAVED_VERSIONS
    assert sorted(h.version for h in again) == sorted(h.version for h in kept)


def test_a_head_file_of_the_single_head_format_still_loads(tmp_path):
    spec = head_spec(tmp_path, ["a", "b"])
    vectors, labels = clusters(4, ["a", "b"])
    head = fit_single_label_head(spec, vectors, labels)
    head_path(spec).write_text(json.dumps(head.to_json()), encoding="utf-8")
    loaded = load_saved_head(spec)
    assert loaded is not None and loaded.version == spec.version
    np.testing.assert_allclose(loaded.coefficients, head.coefficients)


HEAD_VECTORS = {
    "a0": axis((0, 1.0)),
    "a1": axis((0, 1.0), (2, 0.3)),
    "b0": axis((1, 1.0)),
    "b1": axis((1, 1.0), (3, 0.3)),
    "query a": axis((0, 1.0), (4, 0.2)),
    "query b": axis((1, 1.0), (4, 0.2)),
}
HEAD_LABELS = [{"name": "a", "examples": ["a0", "a1"]}, {"name": "b", "examples": ["b0", "b1"]}]


async def test_the_head_is_trained_once_per_version_and_answers_single_label(tmp_path):
    spec = spec_of(tmp_path, kind="embedding_head", labels=HEAD_LABELS, top_two_fields=True)
    engine = FakeEngine(HEAD_VECTORS)
    processor = EmbeddingHeadProcessor(EmbeddingSimilarityProcessor(engine))  # type: ignore[arg-type]
    first = await processor.run(spec, inputs("query a", "query b"), WindowContext())
    again = await processor.run(spec, inputs("query a"), WindowContext())
    results = [r for r in [*first, *again] if isinstance(r, CapabilityResult)]
    assert [r.label for r in results] == ["a", "b", "a"]
    assert results[0].details == {"head": "logistic_regression", "examples": 4}
    assert results[0].fields is not None and results[0].fields["cap_1"] == "a"
    # Examples once (the first run trained), the query texts once per window.
    assert sorted(engine.embedded) == sorted(
        ["a0", "a1", "b0", "b1", "query a", "query b", "query a"]
    )


async def test_a_saved_head_of_the_version_is_loaded_instead_of_training(tmp_path):
    spec = spec_of(tmp_path, kind="embedding_head", labels=HEAD_LABELS)
    # A head that says the opposite of the examples: if it answers, it was loaded.
    flipped = Head(
        ("a", "b"), np.array([axis((1, 5.0)), axis((0, 5.0))]), np.zeros(2), spec.version, 7
    )
    save_head(head_path(spec), flipped)
    engine = FakeEngine(HEAD_VECTORS)
    processor = EmbeddingHeadProcessor(EmbeddingSimilarityProcessor(engine))  # type: ignore[arg-type]
    (result,) = await processor.run(spec, inputs("query a"), WindowContext())
    assert isinstance(result, CapabilityResult)
    assert result.label == "b" and result.details["examples"] == 7
    assert engine.embedded == ["query a"]  # no example was embedded: nothing was trained


async def test_one_window_embeds_each_text_once_for_every_embedding_capability(tmp_path):
    engine = FakeEngine({**TREE_VECTORS, **HEAD_VECTORS})
    similarity = EmbeddingSimilarityProcessor(engine)  # type: ignore[arg-type]
    head = EmbeddingHeadProcessor(similarity)
    taxonomy = TaxonomyProcessor(similarity)
    flat = spec_of(tmp_path, labels=["animal", "vehicle"])
    tree = spec_of(tmp_path, labels=TREE)
    trained = spec_of(tmp_path, kind="embedding_head", labels=HEAD_LABELS)
    for processor, spec in ((similarity, flat), (taxonomy, tree), (head, trained)):
        await processor.run(spec, inputs("a kitten"), WindowContext())  # label texts, once
    engine.embedded.clear()
    context = WindowContext()
    texts = inputs("a puppy", "a sedan", "a puppy")
    await asyncio.gather(
        similarity.run(flat, texts, context),
        taxonomy.run(tree, texts, context),
        head.run(trained, texts, context),
    )
    assert sorted(engine.embedded) == ["a puppy", "a sedan"]


# --- evaluation -------------------------------------------------------------------------------


def test_a_taxonomys_gold_may_be_any_node(tmp_path):
    space = label_space(spec_of(tmp_path, labels=TREE))
    assert space is not None and space.form == "single_label"
    assert "mountain_bike" in space.labels and "animal" in space.labels
    assert space.paths["mountain_bike"] == ("vehicle", "bike", "mountain_bike")
    head_space = label_space(spec_of(tmp_path, kind="embedding_head", labels=HEAD_LABELS))
    assert head_space is not None and head_space.form == "single_label" and not head_space.paths


def test_a_taxonomy_prediction_is_right_when_the_gold_is_on_its_path(tmp_path):
    space = label_space(spec_of(tmp_path, labels=TREE))
    assert space is not None
    paths = space.paths
    assert taxonomy_prediction("vehicle", "mountain_bike", paths) == "vehicle"
    assert taxonomy_prediction("bike", "mountain_bike", paths) == "bike"
    assert taxonomy_prediction("animal", "mountain_bike", paths) == "vehicle"
    assert taxonomy_prediction("cat", "mountain_bike", paths) == "bike"  # at the gold's depth
    assert taxonomy_prediction("road_bike", "car", paths) == "car"  # a shorter path: its deepest
    assert taxonomy_prediction("cat", "dog", paths) == "dog"
    metrics = taxonomy_metrics(
        ["vehicle", "animal", "cat", "bike"], ["mountain_bike", "cat", "dog", "car"], paths
    )
    assert metrics.accuracy == 0.5
    assert metrics.labels == ("animal", "cat", "dog", "vehicle", "car", "bike")
