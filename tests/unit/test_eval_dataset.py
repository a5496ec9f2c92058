"""Reading and validating labeled JSONL files for `capserve eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capabilities.registry import CapabilityRegistry
from evaluation.dataset import (
    DatasetError,
    LabelSpace,
    label_space,
    load_dataset,
    parse_rows,
)

SECRET = "SECRET PROMPT TEXT 7731"
SPACES: dict[str, LabelSpace | None] = {
    "sentiment": LabelSpace("sentiment", "single_label", ("positive", "negative", "neutral")),
    "safety": LabelSpace("safety", "multilabel", ("toxicity", "prompt_injection")),
    "reasoning": LabelSpace("reasoning", "score", ()),
    "extract": None,  # a kind that cannot be evaluated
}


def row(labels: object, **extra: object) -> str:
    return json.dumps({"text": SECRET, "labels": labels, **extra})


def problems_of(lines: list[str]) -> list[str]:
    with pytest.raises(DatasetError) as caught:
        parse_rows(Path("data.jsonl"), lines, SPACES)
    message = str(caught.value)
    assert SECRET not in message
    assert "SECRET" not in message
    return caught.value.problems


def test_valid_rows_keep_their_line_numbers_and_gold_forms():
    lines = [
        row({"sentiment": "neutral", "safety": ["toxicity"], "reasoning": 1}, split="dev"),
        "",
        row({"safety": [], "reasoning": 0.25}),
    ]
    rows = parse_rows(Path("data.jsonl"), lines, SPACES)
    assert [r.line for r in rows] == [1, 3]
    assert rows[0].gold == {
        "sentiment": "neutral",
        "safety": frozenset({"toxicity"}),
        "reasoning": 1.0,
    }
    assert rows[0].split == "dev" and rows[1].split is None
    assert rows[1].gold["safety"] == frozenset()


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"sentiment": ["positive"]}, "capability 'sentiment': must be one label"),
        ({"sentiment": "happy"}, "capability 'sentiment': 'happy' is not one of its labels"),
        ({"safety": "toxicity"}, "capability 'safety': must be a list of labels"),
        ({"safety": ["spam"]}, "capability 'safety': 'spam' is not one of its labels"),
        ({"safety": ["toxicity", "toxicity"]}, "capability 'safety': lists a label twice"),
        ({"reasoning": 1.5}, "capability 'reasoning': 1.5 is outside [0, 1]"),
        ({"reasoning": "high"}, "capability 'reasoning': must be a number in [0, 1], not str"),
        ({"reasoning": True}, "capability 'reasoning': must be a number in [0, 1], not bool"),
        ({"colour": "red"}, "capability 'colour' is unknown; known capabilities: extract"),
        ({"extract": "x"}, "capability 'extract': its kind cannot be evaluated"),
    ],
)
def test_wrong_values_name_the_line_and_capability(labels: object, expected: str):
    problems = problems_of([row({"sentiment": "neutral"}), row(labels)])
    assert len(problems) == 1
    assert problems[0].startswith("line 2: ")
    assert expected in problems[0]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "line 1: not valid JSON"),
        ("[1, 2]", "line 1: must be a JSON object, not list"),
        (json.dumps({"text": "", "labels": {"sentiment": "neutral"}}), "'text' must be a"),
        (json.dumps({"text": SECRET, "labels": {}}), "'labels' must be a non-empty object"),
        (row({"sentiment": "neutral"}, split="train"), "'split' must be one of dev, test"),
        (row({"sentiment": "neutral"}, label="x"), "line 1: unknown keys 'label'"),
    ],
)
def test_malformed_rows_are_refused(line: str, expected: str):
    assert expected in problems_of([line])[0]


def test_every_problem_is_listed():
    problems = problems_of([row({"reasoning": 2}), "oops", row({"sentiment": 3})])
    assert [p.split(":")[0] for p in problems] == ["line 1", "line 2", "line 3"]


def test_an_empty_file_is_refused():
    assert problems_of(["", "  "]) == ["holds no rows"]


def test_load_selects_split_and_capabilities(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        "\n".join(
            [
                row({"sentiment": "neutral", "reasoning": 0.5}, split="dev"),
                row({"sentiment": "positive"}, split="test"),
                row({"reasoning": 0.1}, split="test"),
                row({"reasoning": 0.9}),
            ]
        )
    )
    test_rows = load_dataset(path, SPACES, ["sentiment"], "test")
    assert [(r.line, dict(r.gold)) for r in test_rows] == [(2, {"sentiment": "positive"})]
    assert len(load_dataset(path, SPACES)) == 4
    assert [r.line for r in load_dataset(path, SPACES, None, "dev")] == [1]


def test_load_refuses_unknown_or_unlabeled_capabilities(tmp_path: Path):
    path = tmp_path / "data.jsonl"
    path.write_text(row({"sentiment": "neutral"}, split="dev") + "\n")
    with pytest.raises(DatasetError, match="capability 'nope' is unknown"):
        load_dataset(path, SPACES, ["nope"])
    with pytest.raises(DatasetError, match="capability 'safety': no row labels it"):
        load_dataset(path, SPACES, ["safety"])
    with pytest.raises(DatasetError, match="no row of split 'test'"):
        load_dataset(path, SPACES, None, "test")


def test_label_spaces_of_the_shipped_kinds(shipped_registry: CapabilityRegistry):
    spaces = {spec.name: label_space(spec) for spec in shipped_registry.specs()}
    assert spaces["sentiment"] == LabelSpace(
        "sentiment", "single_label", ("positive", "negative", "neutral")
    )
    topic = spaces["topic"]
    assert topic is not None and topic.form == "single_label"
    route = spaces["route"]
    assert route is not None and route.form == "single_label"  # rules are single-label
    safety = spaces["safety"]
    assert safety is not None and safety.form == "multilabel"
    assert safety.labels == ("toxicity", "prompt_injection")
    assert spaces["reasoning"] == LabelSpace("reasoning", "score", ())
