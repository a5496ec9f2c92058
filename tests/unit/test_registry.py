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
        "prompt": {"instructions": "Classify as {{ labels | join(', ') }}.", "cue": "Q: s\n"},
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
    assert {"sentiment", "topic", "task_type", "complexity", "route", "alerts", "pii"} <= set(names)
    route = shipped_registry.resolve(["route"])
    # route -> complexity -> NVIDIA's dimensions: dependencies first, each once.
    assert route[-1] == "route" and {"task_type", "complexity"} <= set(route)
    assert route.index("reasoning") < route.index("complexity")
    assert {"reasoning", "creativity_scope", "number_of_few_shots"} <= set(route)
    assert len(route) == len(set(route))


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
        ({"instructions": "Classify {{ labels"}, "prompt.instructions template syntax"),
        ({"instructions": "C", "cue": "{{ texte }}"}, "unknown variable(s) ['texte']"),
        ({"instructions": "Classify {{ text }}"}, "may not use 'text'"),
        ({"instructions": "C", "cue": "{{ text }}"}, "may not use 'text'"),
        ({"instructions": "C {{ deps.topic.label }}"}, "may only use 'labels'"),
        ({"instructions": "C", "cue": "{{ deps.topic.label }}"}, "deps.topic"),
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
            prompt={"instructions": "S", "cue": "Topic: {{ deps.topic.label }}\n"},
        ),
    )
    registry = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS)
    assert registry.resolve(["sentiment"]) == ["topic", "sentiment"]


def test_templates_see_label_names_and_descriptions(write_capabilities: Write):
    from capabilities.templates import compile_template

    prompt = {"instructions": "{% for l in labels %}{{ l }}={{ l.description }};{% endfor %}"}
    labels = [{"name": "positive", "description": "happy"}, {"name": "negative"}]
    directory = write_capabilities(choice(prompt=prompt, labels=labels))
    spec = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS).get("sentiment")
    assert (
        compile_template(prompt["instructions"]).render(spec.labels) == "positive=happy;negative=;"
    )


def test_calibrate_needs_probability_scoring(write_capabilities: Write):
    message = load_error(write_capabilities(choice(calibrate=True, scoring="choice")))
    assert "calibrate needs kind 'llm_choice' with probability scoring" in message


def test_calibrate_refuses_templates_that_use_dependencies(write_capabilities: Write):
    prompt = {"instructions": "S", "cue": "{{ deps.topic.label }}"}
    message = load_error(
        write_capabilities(
            embed("topic"), choice(depends_on=["topic"], calibrate=True, prompt=prompt)
        )
    )
    assert "prompt.cue template uses deps, which calibrate: true does not allow" in message


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
    assert "01.yaml: capability 'x': kind 'rule' needs at least two labels" in message


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


def multilabel(name: str = "safety", **extra: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": name,
        "kind": "llm_multilabel",
        "model": "smollm2",
        "labels": [
            {"name": "toxicity", "question": "Is it rude?"},
            {"name": "injection", "question": "Is it a jailbreak?", "threshold": 0.7},
        ],
        "prompt": {"instructions": "Safety.", "cue": "Q: safety\n", "answer_prefix": "A:"},
    }
    definition.update(extra)
    return definition


def score(name: str = "reasoning", **extra: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": name,
        "kind": "llm_score",
        "model": "smollm2",
        "prompt": {"instructions": "Rate 0-9.", "answer_prefix": "Score: "},
    }
    definition.update(extra)
    return definition


def test_question_kinds_load_and_share_one_group_per_model(write_capabilities: Write):
    registry = CapabilityRegistry.from_directory(
        write_capabilities(choice(), multilabel(), score(scale="1-5")), SHIPPED_RUNNERS
    )
    specs = [registry.get(n) for n in ("sentiment", "safety", "reasoning")]
    assert {s.layout for s in specs} == {"shared"}
    groups = {s.group for s in specs}
    assert len(groups) == 1
    (group,) = groups
    assert group is not None and group.name == "smollm2"
    # Every shared question's instructions, in name order, whichever one is asked.
    assert [name for name, _ in group.sections] == ["reasoning", "safety", "sentiment"]
    assert "Rate 0-9." in group.system_text() and "Safety." in group.system_text()


def test_question_kind_rules(write_capabilities: Write):
    message = load_error(
        write_capabilities(
            score(labels=["a", "b"]),
            multilabel(labels=[{"name": "x"}]),
            multilabel("empty", labels=[]),
            choice("one", labels=["only"]),
            embed("e", group="g"),
            choice("two", prompt=None),
        )
    )
    assert "capability 'reasoning': kind 'llm_score' takes no labels" in message
    assert "labels ['x'] need a `question`" in message
    assert "capability 'empty': kind 'llm_multilabel' needs at least one label" in message
    assert "capability 'one': kind 'llm_choice' needs at least two labels" in message
    assert "capability 'e': group is only used by kind(s) llm_choice," in message
    assert "capability 'two': kind 'llm_choice' needs `prompt`" in message


def test_a_group_has_one_model(write_capabilities: Write):
    runners = {**SHIPPED_RUNNERS, "other": "generate"}
    directory = write_capabilities(choice(group="g"), score(group="g", model="other"))
    with pytest.raises(CapabilityConfigError) as info:
        CapabilityRegistry.from_directory(directory, runners)
    assert "question group 'g' mixes models ['other', 'smollm2']" in str(info.value)


def test_own_layout_stays_out_of_the_shared_system_part(write_capabilities: Write):
    registry = CapabilityRegistry.from_directory(
        write_capabilities(choice(), score(layout="own")), SHIPPED_RUNNERS
    )
    sentiment, reasoning = registry.get("sentiment"), registry.get("reasoning")
    assert reasoning.layout == "own" and reasoning.group is None
    assert sentiment.group is not None
    assert [name for name, _ in sentiment.group.sections] == ["sentiment"]


def test_layout_override_forces_every_question(write_capabilities: Write):
    from schemas.config import PromptingConfig

    directory = write_capabilities(choice(), score(layout="own"))
    own = CapabilityRegistry.from_directory(
        directory, SHIPPED_RUNNERS, prompting=PromptingConfig(layout_override="own")
    )
    shared = CapabilityRegistry.from_directory(
        directory, SHIPPED_RUNNERS, prompting=PromptingConfig(layout_override="shared")
    )
    assert {own.get(n).layout for n in ("sentiment", "reasoning")} == {"own"}
    assert {shared.get(n).layout for n in ("sentiment", "reasoning")} == {"shared"}
    assert own.get("sentiment").version != shared.get("sentiment").version


def test_a_change_to_the_group_changes_every_member_version(write_capabilities: Write):
    def versions(*definitions: dict[str, Any]) -> dict[str, str]:
        registry = CapabilityRegistry.from_directory(
            write_capabilities(*definitions), SHIPPED_RUNNERS
        )
        return {name: registry.get(name).version for name in registry.names()}

    base = versions(choice(), score(), embed("topic"))
    changed = versions(
        choice(),
        score(prompt={"instructions": "Rate 0 to 9.", "answer_prefix": "S: "}),
        embed("topic"),
    )
    assert changed["sentiment"] != base["sentiment"]  # its group's system part changed
    assert changed["topic"] == base["topic"]  # not in the group
    own = versions(choice(), score(layout="own"), embed("topic"))
    changed_own = versions(
        choice(),
        score(layout="own", prompt={"instructions": "X", "answer_prefix": "S: "}),
        embed("topic"),
    )
    assert changed_own["sentiment"] == own["sentiment"]  # own questions stay out of the group


def test_versions_cover_model_settings_and_dependencies(write_capabilities: Write):
    from schemas.config import PromptingConfig

    directory = write_capabilities(embed("topic"), choice(depends_on=["topic"]))
    base = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS, {"smollm2": "a"})
    model = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS, {"smollm2": "b"})
    upstream = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS, {"minilm": "b"})
    padded = CapabilityRegistry.from_directory(
        directory, SHIPPED_RUNNERS, {"smollm2": "a"}, PromptingConfig(pad_to_block=True)
    )
    version = base.get("sentiment").version
    assert model.get("sentiment").version != version
    assert upstream.get("sentiment").version != version  # its dependency's model changed
    assert padded.get("sentiment").version != version
