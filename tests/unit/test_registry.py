from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from capabilities.loader import CapabilityConfigError
from capabilities.registry import CapabilityRegistry, UnknownCapabilityError
from tests.unit.fakes import SHIPPED_RUNNERS

Write = Callable[..., Path]


def choice(name: str = "sentiment", **extra: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": name,
        "kind": "llm_choice",
        "model": "smollm2",
        "labels": ["positive", "negative"],
        "prompt": {"system": "Classify as {{ labels | join(', ') }}.", "user": "{{ text }}"},
    }
    definition.update(extra)
    return definition


def embed(name: str, **extra: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": name,
        "kind": "embedding_similarity",
        "model": "minilm",
        "labels": ["a", "b"],
    }
    definition.update(extra)
    return definition


def load_error(directory: Path) -> str:
    with pytest.raises(CapabilityConfigError) as info:
        CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS)
    return str(info.value)


def test_shipped_capabilities_load_with_a_two_deep_chain(shipped_registry: CapabilityRegistry):
    names = shipped_registry.names()
    assert {"sentiment", "topic", "task_type", "complexity", "route", "escalation"} <= set(names)
    assert shipped_registry.resolve(["route"]) == ["task_type", "complexity", "route"]


def test_resolve_returns_dependencies_first_and_each_once(write_capabilities: Write):
    directory = write_capabilities(
        embed("base"),
        embed("mid", depends_on=["base"]),
        {
            "name": "top",
            "kind": "rule",
            "depends_on": ["mid", "base"],
            "labels": ["x", "y"],
            "rule": {"default": "x"},
        },
    )
    registry = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS)
    assert registry.resolve(["top", "base", "top"]) == ["base", "mid", "top"]
    assert registry.resolve(["mid"]) == ["base", "mid"]


def test_unknown_requested_capability_lists_valid_ones(shipped_registry: CapabilityRegistry):
    with pytest.raises(UnknownCapabilityError) as info:
        shipped_registry.resolve(["sentiment", "nope"])
    assert "'nope'" in str(info.value)
    assert "sentiment" in str(info.value) and "topic" in str(info.value)


def test_unknown_kind_names_file_and_capability(write_capabilities: Write):
    message = load_error(write_capabilities(choice(kind="magic")))
    assert "00.yaml: capability 'sentiment'" in message and "kind" in message


def test_unknown_model(write_capabilities: Write):
    message = load_error(write_capabilities(choice(model="gpt9")))
    assert "00.yaml: capability 'sentiment'" in message and "unknown model 'gpt9'" in message


def test_model_with_the_wrong_runner(write_capabilities: Write):
    message = load_error(write_capabilities(choice(model="minilm")))
    assert "needs a model with the generate runner" in message


def test_unknown_dependency(write_capabilities: Write):
    message = load_error(write_capabilities(choice(depends_on=["ghost"])))
    assert "capability 'sentiment'" in message and "unknown dependency 'ghost'" in message


def test_dependency_cycle(write_capabilities: Write):
    message = load_error(
        write_capabilities(
            embed("a", depends_on=["c"]), embed("b", depends_on=["a"]), embed("c", depends_on=["b"])
        )
    )
    assert "dependency cycle a -> c -> b -> a" in message


def test_duplicate_name(write_capabilities: Write):
    message = load_error(write_capabilities(choice(), choice()))
    assert "01.yaml: capability 'sentiment': duplicate name (first defined in 00.yaml)" in message


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ({"system": "Classify {{ labels", "user": "{{ text }}"}, "prompt.system template syntax"),
        ({"system": "Classify", "user": "{{ texte }}"}, "unknown variable(s) ['texte']"),
        ({"system": "Classify {{ text }}", "user": "{{ text }}"}, "may only use 'labels'"),
        ({"system": "Classify", "user": "Say something"}, "must use {{ text }}"),
        ({"system": "Classify", "user": "{{ text }} {{ deps.topic.label }}"}, "deps.topic"),
    ],
)
def test_template_errors(write_capabilities: Write, prompt: dict[str, str], expected: str):
    message = load_error(write_capabilities(choice(prompt=prompt)))
    assert "capability 'sentiment'" in message
    assert expected in message


def test_template_may_use_declared_dependency(write_capabilities: Write):
    directory = write_capabilities(
        embed("topic"),
        choice(
            depends_on=["topic"],
            prompt={"system": "S", "user": "{{ deps.topic.label }}: {{ text }}"},
        ),
    )
    registry = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS)
    assert registry.resolve(["sentiment"]) == ["topic", "sentiment"]


def test_templates_see_label_names_and_descriptions(write_capabilities: Write):
    from capabilities.templates import compile_template

    prompt = {
        "system": "{% for l in labels %}{{ l }}={{ l.description }};{% endfor %}",
        "user": "{{ text }}",
    }
    labels = [{"name": "positive", "description": "happy"}, {"name": "negative"}]
    directory = write_capabilities(choice(prompt=prompt, labels=labels))
    spec = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS).get("sentiment")
    assert compile_template(prompt["system"]).render(spec.labels) == "positive=happy;negative=;"


def test_calibrate_needs_probability_scoring(write_capabilities: Write):
    message = load_error(write_capabilities(choice(calibrate=True, scoring="choice")))
    assert "calibrate needs kind 'llm_choice' with probability scoring" in message


def test_calibrate_refuses_templates_that_use_dependencies(write_capabilities: Write):
    prompt = {"system": "S", "user": "{{ deps.topic.label }}: {{ text }}"}
    message = load_error(
        write_capabilities(
            embed("topic"), choice(depends_on=["topic"], calibrate=True, prompt=prompt)
        )
    )
    assert "prompt.user template uses deps, which calibrate: true does not allow" in message


def test_rule_labels_must_exist(write_capabilities: Write):
    message = load_error(
        write_capabilities(
            embed("topic"),
            {
                "name": "r",
                "kind": "rule",
                "depends_on": ["topic"],
                "labels": ["x", "y"],
                "rule": {"cases": [{"when": {"topic": "zzz"}, "label": "w"}], "default": "q"},
            },
        )
    )
    assert "rule default 'q' is not one of its labels" in message
    assert "label 'w' is not one of its labels" in message
    assert "['zzz'] are not labels of 'topic'" in message


def test_invalid_yaml_and_missing_fields(write_capabilities: Write):
    message = load_error(write_capabilities("name: [unclosed", {"name": "x", "kind": "rule"}))
    assert "00.yaml: not valid YAML" in message
    assert "01.yaml: capability 'x': labels: Field required" in message


def test_all_problems_are_reported_together(write_capabilities: Write):
    message = load_error(write_capabilities(choice(model="gpt9"), embed("e", depends_on=["ghost"])))
    assert "unknown model 'gpt9'" in message and "unknown dependency 'ghost'" in message


def test_version_changes_with_the_definition(write_capabilities: Write, tmp_path: Path):
    first = CapabilityRegistry.from_directory(write_capabilities(choice()), SHIPPED_RUNNERS)
    version = first.get("sentiment").version
    second = CapabilityRegistry.from_directory(
        write_capabilities(choice(labels=["positive", "negative", "mixed"])), SHIPPED_RUNNERS
    )
    assert second.get("sentiment").version != version
