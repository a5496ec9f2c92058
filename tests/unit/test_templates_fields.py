"""Templates read upstream labels, scores, paths and JSON fields (`deps.<dep>.<field>`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from capabilities.loader import CapabilityConfigError
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.templates import TemplateProblem, check_renders, compile_template
from tests.unit.fakes import SHIPPED_RUNNERS

RECOMMENDATION = CapabilityResult(
    "rec",
    "v1",
    "large",
    0.8,
    {},
    score=0.25,
    fields={"model_tier": "large", "hints": ["Be specific", "Give an example"], "label": "x"},
    path=("root", "leaf"),
)


def render(source: str, result: CapabilityResult = RECOMMENDATION) -> str:
    return compile_template(source).render([], None, {"rec": result})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # A name that is not a result attribute reads the result's fields.
        ("{{ deps.rec.model_tier }}", "large"),
        ("{{ deps.rec.hints | join('; ') }}", "Be specific; Give an example"),
        ("{{ deps.rec.hints[1] }}", "Give an example"),
        ("{{ deps.rec['model_tier'] }}", "large"),
        # Result attributes come first (`label` is the result's, though the object has one);
        # the object's own stays reachable through `fields`.
        ("{{ deps.rec.label }}", "large"),
        ("{{ deps.rec.fields.label }}", "x"),
        ("{{ deps.rec.confidence }}|{{ deps.rec.score }}", "0.8|0.25"),
        ("{{ deps.rec.path | join('/') }}", "root/leaf"),
        # A missing field renders empty, is false and is not defined.
        ("[{{ deps.rec.nothing }}]", "[]"),
        ("[{{ deps.rec.nothing.deeper[0] }}]", "[]"),
        ("{% if deps.rec.nothing is defined %}yes{% else %}no{% endif %}", "no"),
        ("{% if deps.rec.hints %}yes{% else %}no{% endif %}", "yes"),
    ],
)
def test_templates_read_result_attributes_then_fields(source: str, expected: str):
    assert render(source) == expected


def test_a_result_without_fields_or_path_renders_empty_collections():
    bare = CapabilityResult("rec", "v1", "small", 0.5, {"small": 0.5})
    assert render("[{{ deps.rec.path | join('/') }}][{{ deps.rec.fields | length }}]", bare) == (
        "[][0]"
    )
    assert render("[{{ deps.rec.model_tier }}]", bare) == "[]"


def test_the_load_check_accepts_field_reads_and_keeps_strict_semantics_elsewhere():
    sample = {"rec": ("sample",)}
    check_renders(compile_template("{{ deps.rec.hints | join(', ') }}"), [], sample, False)
    check_renders(compile_template("{{ deps.rec.fields.hints[0] }}"), [], sample, False)
    with pytest.raises(TemplateProblem, match="unknown variable"):
        compile_template("{{ hints }}")
    with pytest.raises(TemplateProblem, match="not in depends_on"):
        check_renders(compile_template("{{ deps.other.label }}"), [], sample, False)
    with pytest.raises(TemplateProblem, match="cannot be rendered"):
        # An attribute of a value that exists is still strict.
        check_renders(compile_template("{{ deps.rec.label.missing }}"), [], sample, False)
    with pytest.raises(TemplateProblem, match="cannot be rendered"):
        check_renders(compile_template("{{ deps.rec._private }}"), [], sample, False)


def test_a_question_cue_may_read_an_llm_json_dependencys_fields(
    write_capabilities: Callable[..., Path],
):
    json_capability = {
        "name": "advice",
        "kind": "llm_json",
        "model": "smollm2",
        "output_schema": {
            "type": "object",
            "properties": {"tier": {"type": "string"}, "hints": {"type": "array"}},
        },
        "label_field": "tier",
        "prompt": {"instructions": "Give advice as JSON."},
    }
    question = {
        "name": "urgent",
        "kind": "llm_choice",
        "model": "smollm2",
        "depends_on": ["advice"],
        "labels": ["yes", "no"],
        "prompt": {
            "instructions": "Is it urgent?",
            "cue": "Tier: {{ deps.advice.tier }}; hints: {{ deps.advice.hints | length }}\n",
        },
    }
    registry = CapabilityRegistry.from_directory(
        write_capabilities(json_capability, question), SHIPPED_RUNNERS
    )
    assert registry.get("urgent").depends_on == ("advice",)
    typo = dict(question, prompt={"instructions": "x", "cue": "{{ deps.advise.tier }}"})
    with pytest.raises(CapabilityConfigError, match="not in depends_on"):
        CapabilityRegistry.from_directory(
            write_capabilities(json_capability, typo), SHIPPED_RUNNERS
        )
