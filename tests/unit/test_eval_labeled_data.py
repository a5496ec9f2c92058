"""benchmarks/data/labeled.jsonl: valid against the shipped capabilities, big and balanced
enough to quote figures from."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from capabilities.registry import CapabilityRegistry
from evaluation.dataset import EvalRow, LabelSpace, label_space, load_dataset
from tests.unit.fakes import SHIPPED_CAPABILITIES, SHIPPED_RUNNERS

LABELED = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "labeled.jsonl"
SMOKE = Path(__file__).resolve().parents[1] / "data" / "eval_smoke.jsonl"
SINGLE_LABEL = ("sentiment", "topic")
# NVIDIA's complexity dimensions, and the prompt complexity score computed from the golds.
SCORES = (
    "reasoning",
    "creativity_scope",
    "contextual_knowledge",
    "domain_knowledge",
    "constraint_ct",
    "no_label_reason",
    "complexity",
)
CORE = ("sentiment", "topic", "safety")
EVALUATED = (*SINGLE_LABEL, "safety", *SCORES, "number_of_few_shots")
SMOKE_EVALUATED = ("sentiment", "topic", "safety", "reasoning", "creativity_scope")


def rough_tokens(text: str) -> float:
    """About four characters per token for English text."""
    return len(text) / 4


@pytest.fixture(scope="module")
def spaces() -> dict[str, LabelSpace | None]:
    registry = CapabilityRegistry.from_directory(SHIPPED_CAPABILITIES, SHIPPED_RUNNERS)
    return {spec.name: label_space(spec) for spec in registry.specs()}


@pytest.fixture(scope="module")
def rows(spaces: dict[str, LabelSpace | None]) -> list[EvalRow]:
    # Validates every value against the shipped registry (kind, labels, score range).
    return load_dataset(LABELED, spaces)


def test_the_shipped_capabilities_have_the_documented_forms(spaces):
    forms = {name: (s.form, s.labels) for name, s in spaces.items() if s is not None}
    assert forms["safety"] == ("multilabel", ("toxicity", "prompt_injection"))
    for name in SCORES:
        assert forms[name] == ("score", ()), name
    assert forms["number_of_few_shots"] == ("count", ())
    assert set(forms["sentiment"][1]) == {"positive", "negative", "neutral"}
    assert len(top_level(spaces["topic"])) == 9
    # NVIDIA's 11 task types: their gold values are in benchmarks/data/task_types.jsonl.
    assert len(forms["task_type"][1]) == 11


def top_level(space: LabelSpace | None) -> tuple[str, ...]:
    """A taxonomy's root labels (any other capability's labels): what this file's golds use."""
    assert space is not None
    if not space.paths:
        return space.labels
    return tuple(name for name, path in space.paths.items() if len(path) == 1)


def test_size_long_rows_and_unique_texts(rows):
    assert len(rows) >= 200
    long_rows = [r for r in rows if 100 <= rough_tokens(r.text) <= 500]
    assert len(long_rows) >= 40
    assert len({r.text for r in rows}) == len(rows)
    assert {name for r in rows for name in r.gold} == set(EVALUATED)


def test_most_rows_carry_the_core_capabilities(rows):
    assert all("safety" in r.gold and "sentiment" in r.gold for r in rows)
    for name in CORE:
        assert sum(name in r.gold for r in rows) >= 0.85 * len(rows), name


@pytest.mark.parametrize("name", SINGLE_LABEL)
def test_every_label_appears_at_least_8_times(rows, spaces, name):
    counts = Counter(r.gold[name] for r in rows if name in r.gold)
    assert set(counts) == set(top_level(spaces[name]))
    assert min(counts.values()) >= 8, counts


def test_each_safety_label_has_at_least_25_positives_and_negatives_dominate(rows):
    counts = Counter(label for r in rows for label in r.gold["safety"])
    assert counts["toxicity"] >= 25 and counts["prompt_injection"] >= 25
    assert sum(not r.gold["safety"] for r in rows) >= len(rows) / 2


@pytest.mark.parametrize("name", ("reasoning", "creativity_scope"))
def test_scores_are_spread(rows, name):
    values = [float(r.gold[name]) for r in rows if name in r.gold]
    assert sum(v <= 0.2 for v in values) >= 20
    assert sum(0.3 <= v <= 0.7 for v in values) >= 20
    assert sum(v >= 0.8 for v in values) >= 15
    assert len(set(values)) >= 8


def test_splits_are_about_40_60_and_stratified(rows):
    dev = [r for r in rows if r.split == "dev"]
    assert all(r.split in ("dev", "test") for r in rows)
    assert 0.35 <= len(dev) / len(rows) <= 0.45
    for name in ("sentiment",):
        for label, total in Counter(r.gold[name] for r in rows if name in r.gold).items():
            in_dev = sum(r.gold.get(name) == label for r in dev)
            assert 0.2 <= in_dev / total <= 0.6, (name, label, in_dev, total)
    for label in ("toxicity", "prompt_injection"):
        total = sum(label in r.gold["safety"] for r in rows)
        in_dev = sum(label in r.gold["safety"] for r in dev)
        assert 0.25 <= in_dev / total <= 0.55, label


def test_the_smoke_file_covers_every_evaluated_capability(spaces):
    smoke = load_dataset(SMOKE, spaces)
    assert {name for r in smoke for name in r.gold} == set(SMOKE_EVALUATED)
    assert not {r.text for r in smoke} & {r.text for r in load_dataset(LABELED, spaces)}
