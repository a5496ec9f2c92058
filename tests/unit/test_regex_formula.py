"""The model-free kinds: regex (labels, spans, count) and formula (weighted inputs, clip, report
fields, a missing input as an error result); rule case details; and what the loader refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from capabilities.formulas import evaluate_formula
from capabilities.loader import CapabilityConfigError
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.rules import evaluate_rule
from capabilities.spec import CapabilitySpec
from processors.base import ProcessorInput, WindowContext
from processors.formula import FormulaProcessor
from processors.regex import THREAD_THRESHOLD_CHARS, RegexProcessor
from tests.unit.fakes import SHIPPED_RUNNERS

Write = Callable[..., Path]

PII: dict[str, Any] = {
    "name": "pii",
    "kind": "regex",
    "labels": [
        {"name": "email", "builtin": "email"},
        {"name": "phone", "builtin": "phone"},
        {"name": "card", "builtin": "credit_card"},
        {"name": "iban", "builtin": "iban"},
        {"name": "ticket", "pattern": r"\bTCK-\d{4}\b"},
    ],
}


def load(write: Write, *definitions: dict[str, Any]) -> CapabilityRegistry:
    return CapabilityRegistry.from_directory(write(*definitions), SHIPPED_RUNNERS)


def problems(write: Write, *definitions: dict[str, Any]) -> str:
    with pytest.raises(CapabilityConfigError) as caught:
        load(write, *definitions)
    return "\n".join(caught.value.problems)


async def run_regex(spec: CapabilitySpec, *texts: str) -> list[CapabilityResult]:
    inputs = [ProcessorInput(text, {}) for text in texts]
    outcomes = await RegexProcessor().run(spec, inputs, WindowContext())
    assert all(isinstance(o, CapabilityResult) for o in outcomes)
    return [o for o in outcomes if isinstance(o, CapabilityResult)]


# --- regex -----------------------------------------------------------------------------------


async def test_regex_labels_spans_and_count(write_capabilities: Write):
    spec = load(write_capabilities, PII).get("pii")
    text = (
        "TCK-1234: mail ann@example.com, card 4111 1111 1111 1111, "
        "not 4111 1111 1111 1112, call +1 555 123 4567"
    )
    (result,) = await run_regex(spec, text)
    # Definition order, not text order.
    assert result.labels == ("email", "phone", "card", "ticket")
    assert result.label == "email"
    assert result.confidence == 1.0
    assert result.probabilities == {
        "email": 1.0,
        "phone": 1.0,
        "card": 1.0,
        "iban": 0.0,
        "ticket": 1.0,
    }
    assert result.fields is not None
    matches = result.fields["matches"]
    assert [m["label"] for m in matches] == ["ticket", "email", "card", "phone"]  # text order
    assert result.fields["count"] == 4
    spans = {m["label"]: text[m["start"] : m["end"]] for m in matches}
    assert spans == {
        "ticket": "TCK-1234",
        "email": "ann@example.com",
        "card": "4111 1111 1111 1111",
        "phone": "+1 555 123 4567",
    }


async def test_regex_results_never_hold_the_matched_text(write_capabilities: Write):
    spec = load(write_capabilities, PII).get("pii")
    (result,) = await run_regex(spec, "mail secret.person@example.com")
    assert "secret.person" not in repr(result)
    assert set(result.fields["matches"][0]) == {"label", "start", "end"}  # type: ignore[index]


async def test_regex_without_a_match(write_capabilities: Write):
    spec = load(write_capabilities, PII).get("pii")
    (result,) = await run_regex(spec, "nothing to see here")
    assert result.labels == () and result.label is None
    assert result.fields == {"count": 0, "matches": []}
    assert set(result.probabilities.values()) == {0.0}


async def test_regex_counts_every_match_of_a_custom_pattern(write_capabilities: Write):
    fewshots = {
        "name": "fewshots",
        "kind": "regex",
        "labels": [
            {"name": "example", "pattern": r"(?m)^(?:Example\b|Input:|Q:)"},
            {"name": "never", "pattern": "ZZZ"},
        ],
    }
    spec = load(write_capabilities, fewshots).get("fewshots")
    text = "Classify.\nExample 1: a\nInput: b\nQ: c\nnot Example inline\nQ: d"
    (result,) = await run_regex(spec, text)
    assert result.fields is not None and result.fields["count"] == 4
    assert result.labels == ("example",)
    assert [text[m["start"] : m["end"]] for m in result.fields["matches"]] == [
        "Example",
        "Input:",
        "Q:",
        "Q:",
    ]


async def test_regex_skips_empty_matches(write_capabilities: Write):
    definition = {
        "name": "words",
        "kind": "regex",
        "labels": [{"name": "word", "pattern": r"\b(?:cat)?"}],
    }
    spec = load(write_capabilities, definition).get("words")
    (result,) = await run_regex(spec, "a cat and a dog")
    assert result.fields is not None and result.fields["count"] == 1


async def test_large_batches_match_in_a_worker_thread(
    write_capabilities: Write, monkeypatch: pytest.MonkeyPatch
):
    spec = load(write_capabilities, PII).get("pii")
    threaded: list[int] = []
    real = asyncio.to_thread

    async def to_thread(func: Any, *args: Any) -> Any:
        threaded.append(len(args[2]))
        return await real(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    small = await run_regex(spec, "mail a@b.io")
    assert threaded == []
    chunk = "x" * 1000 + " mail a@b.io"
    texts = [chunk] * (THREAD_THRESHOLD_CHARS // len(chunk) + 1)
    large = await run_regex(spec, *texts)
    assert threaded == [len(texts)]
    assert large[0].fields["matches"][0]["start"] == 1006  # type: ignore[index]
    assert small[0].label == large[0].label == "email"


# --- formula ---------------------------------------------------------------------------------


def dep_result(
    name: str, score: float | None, confidence: float = 1.0, **fields: Any
) -> CapabilityResult:
    return CapabilityResult(name, "v", None, confidence, {}, score=score, fields=fields or None)


COMPLEXITY_INPUTS: list[dict[str, Any]] = [
    {"name": n, "kind": "llm_score", "model": "smollm2", "prompt": {"instructions": "Rate."}}
    for n in ("creativity_scope", "reasoning", "constraint_ct", "domain_knowledge")
] + [
    {"name": "contextual_knowledge", "kind": "llm_score", "model": "smollm2",
     "prompt": {"instructions": "Rate."}},
    {"name": "number_of_few_shots", "kind": "regex",
     "labels": [{"name": "shot", "pattern": "(?m)^Example"}]},
]  # fmt: skip

SEED_FORMULA: dict[str, Any] = {
    "name": "prompt_complexity_score",
    "kind": "formula",
    "depends_on": [d["name"] for d in COMPLEXITY_INPUTS],
    "formula": {
        "terms": {
            "creativity_scope": 0.35,
            "reasoning": 0.25,
            "constraint_ct": 0.15,
            "domain_knowledge": 0.15,
            "contextual_knowledge": 0.05,
            "number_of_few_shots.count": 0.05,
        },
    },
}


def seed_deps(**overrides: CapabilityResult) -> dict[str, CapabilityResult]:
    deps = {
        "creativity_scope": dep_result("creativity_scope", 0.8, 0.9),
        "reasoning": dep_result("reasoning", 0.6, 0.7),
        "constraint_ct": dep_result("constraint_ct", 0.4),
        "domain_knowledge": dep_result("domain_knowledge", 0.2),
        "contextual_knowledge": dep_result("contextual_knowledge", 1.0),
        "number_of_few_shots": dep_result("number_of_few_shots", None, count=2),
    }
    return deps | overrides


def json_facts(properties: dict[str, Any]) -> dict[str, Any]:
    """An llm_json capability `facts` whose output object has these properties."""
    return {
        "name": "facts",
        "kind": "llm_json",
        "model": "smollm2",
        "prompt": {"instructions": "Extract."},
        "output_schema": {"type": "object", "properties": properties},
    }


async def run_formula(spec: CapabilitySpec, *deps: dict[str, CapabilityResult]) -> list[Any]:
    inputs = [ProcessorInput("text", d) for d in deps]
    return list(await FormulaProcessor().run(spec, inputs, WindowContext()))


async def test_seed_000_prompt_complexity_score(write_capabilities: Write):
    spec = load(write_capabilities, *COMPLEXITY_INPUTS, SEED_FORMULA).get("prompt_complexity_score")
    (result,) = await run_formula(spec, seed_deps())
    expected = 0.35 * 0.8 + 0.25 * 0.6 + 0.15 * 0.4 + 0.15 * 0.2 + 0.05 * 1.0 + 0.05 * 2
    assert result.score == pytest.approx(expected)
    assert result.label is None and result.error is None
    assert result.confidence == 0.7  # the least sure input
    assert result.fields == pytest.approx(
        {
            "creativity_scope": 0.8,
            "reasoning": 0.6,
            "constraint_ct": 0.4,
            "domain_knowledge": 0.2,
            "contextual_knowledge": 1.0,
            "number_of_few_shots": 2.0,
            "prompt_complexity_score": expected,
        }
    )
    assert result.details == {"terms": SEED_FORMULA["formula"]["terms"]}


async def test_formula_clip_field_and_report(write_capabilities: Write):
    formula = SEED_FORMULA | {
        "formula": {
            "terms": {"reasoning": 2.0, "number_of_few_shots.count": 1.0},
            "report": ["domain_knowledge"],
            "field": "total",
            "clip": [0.0, 2.5],
        }
    }
    spec = load(write_capabilities, *COMPLEXITY_INPUTS, formula).get("prompt_complexity_score")
    high, low = await run_formula(
        spec,
        seed_deps(),
        seed_deps(reasoning=dep_result("reasoning", 0.1))
        | {"number_of_few_shots": dep_result("number_of_few_shots", None, count=0)},
    )
    assert high.score == 2.5  # 2 * 0.6 + 2 = 3.2, clipped
    assert high.fields == pytest.approx(
        {"reasoning": 0.6, "number_of_few_shots": 2.0, "domain_knowledge": 0.2, "total": 2.5}
    )
    assert low.score == pytest.approx(0.2)
    # The report-only input is no term, yet the confidence covers every input read.
    assert high.confidence == 0.7


async def test_formula_without_clip_and_with_booleans_and_negative_weights(
    write_capabilities: Write,
):
    deps: list[dict[str, Any]] = [
        {"name": "flag", "kind": "regex", "labels": [{"name": "x", "pattern": "x"}]},
        {"name": "base", "kind": "llm_score", "model": "smollm2",
         "prompt": {"instructions": "Rate."}},
    ]  # fmt: skip
    formula = {
        "name": "net",
        "kind": "formula",
        "depends_on": ["flag", "base"],
        "formula": {"terms": {"base": -2.0, "flag.count": 1.0}, "clip": None},
    }
    llm_json = json_facts({"urgent": {"type": "boolean"}, "n": {"type": ["integer", "null"]}})
    with_bool = {
        "name": "urgency",
        "kind": "formula",
        "depends_on": ["facts"],
        "formula": {"terms": {"facts.urgent": 0.75, "facts.n": 0.1}},
    }
    registry = load(write_capabilities, *deps, formula, llm_json, with_bool)
    (result,) = await run_formula(
        registry.get("net"),
        {"flag": dep_result("flag", None, count=3), "base": dep_result("base", 2.5)},
    )
    assert result.score == pytest.approx(-2.0)  # no clip: below 0
    facts = CapabilityResult("facts", "v", None, 1.0, {}, fields={"urgent": True, "n": 2})
    (urgent,) = await run_formula(registry.get("urgency"), {"facts": facts})
    assert urgent.score == pytest.approx(0.95)
    # Two inputs read `facts`: each is reported under its whole ref.
    assert urgent.fields == {"facts.urgent": 1.0, "facts.n": 2.0, "urgency": pytest.approx(0.95)}


@pytest.mark.parametrize(
    ("override", "ref"),
    [
        ({"reasoning": dep_result("reasoning", None)}, "reasoning"),
        (
            {"number_of_few_shots": dep_result("number_of_few_shots", None)},
            "number_of_few_shots.count",
        ),
        (
            {"number_of_few_shots": dep_result("number_of_few_shots", None, count="two")},
            "number_of_few_shots.count",
        ),
        ({"reasoning": dep_result("reasoning", float("nan"))}, "reasoning"),
    ],
)
async def test_an_input_without_a_value_is_an_error_result_for_that_text(
    write_capabilities: Write, override: dict[str, CapabilityResult], ref: str
):
    spec = load(write_capabilities, *COMPLEXITY_INPUTS, SEED_FORMULA).get("prompt_complexity_score")
    bad, good = await run_formula(spec, seed_deps(**override), seed_deps())
    assert bad.error == f"input '{ref}' has no value"
    assert bad.score is None and not bad.answered
    assert good.error is None and good.score is not None


def test_two_inputs_of_one_dependency_are_reported_under_their_refs(write_capabilities: Write):
    facts = json_facts({"a": {"type": "number"}, "b": {"type": "number"}})
    both = {
        "name": "both",
        "kind": "formula",
        "depends_on": ["facts"],
        "formula": {"terms": {"facts.a": 1.0, "facts.b": 1.0}, "clip": None},
    }
    spec = load(write_capabilities, facts, both).get("both")
    deps = {"facts": CapabilityResult("facts", "v", None, 1.0, {}, fields={"a": 1, "b": 2})}
    assert evaluate_formula(spec, deps).fields == {"facts.a": 1.0, "facts.b": 2.0, "both": 3.0}


# --- rule details ----------------------------------------------------------------------------


def test_rule_case_details_and_default_details(write_capabilities: Write):
    topic = {"name": "topic", "kind": "embedding_similarity", "model": "minilm",
             "labels": ["code", "chat"]}  # fmt: skip
    route = {
        "name": "route",
        "kind": "rule",
        "depends_on": ["topic"],
        "labels": ["big", "small"],
        "rule": {
            "cases": [{"when": {"topic": "code"}, "label": "big", "details": {"tier": "large"}}],
            "default": "small",
            "default_details": {"tier": "small", "budget": 1},
        },
    }
    spec = load(write_capabilities, topic, route).get("route")

    def decide(label: str) -> CapabilityResult:
        deps = {"topic": CapabilityResult("topic", "v", label, 0.8, {label: 0.8})}
        return evaluate_rule(spec, deps)

    assert decide("code").details == {
        "tier": "large",
        "matched": "case 0",
        "inputs": {"topic": "code"},
    }
    assert decide("chat").label == "small"
    assert decide("chat").details["tier"] == "small" and decide("chat").details["budget"] == 1


# --- loader validation -----------------------------------------------------------------------

SCORE = {"name": "rating", "kind": "llm_score", "model": "smollm2",
         "prompt": {"instructions": "Rate."}}  # fmt: skip
TOPIC = {"name": "topic", "kind": "embedding_similarity", "model": "minilm",
         "labels": ["a", "b"]}  # fmt: skip


def formula(terms: dict[str, float], depends_on: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "calc",
        "kind": "formula",
        "depends_on": depends_on,
        "formula": {"terms": terms} | extra,
    }


@pytest.mark.parametrize(
    ("definitions", "message"),
    [
        (
            [SCORE, formula({"rating": 1.0, "other.x": 1.0}, ["rating"])],
            "formula: 'other.x' reads 'other', which is not in depends_on",
        ),
        (
            [SCORE, formula({"rating": 1.0}, ["rating"], report=["topic"])],
            "formula: 'topic' reads 'topic', which is not in depends_on",
        ),
        (
            [TOPIC, formula({"topic": 1.0}, ["topic"])],
            "formula: 'topic' has no score (kind embedding_similarity); name a field",
        ),
        (
            [PII, formula({"pii": 1.0}, ["pii"])],
            "formula: 'pii' has no score (kind regex)",
        ),
        (
            [PII, formula({"pii.matches": 1.0}, ["pii"])],
            "formula: 'pii.matches': 'pii' has no number field 'matches' (it has ['count'])",
        ),
        (
            [SCORE, formula({"rating": 1.0}, ["rating"], clip=[1.0, 0.0])],
            "formula.clip: the low bound 1.0 is above the high bound 0.0",
        ),
        (
            [SCORE, formula({"rating": 1.0}, ["rating"], field="rating")],
            "formula: the total's field 'rating' is also an input's field",
        ),
        (
            [
                TOPIC,
                {"name": "rt", "kind": "rule", "depends_on": ["topic"], "labels": ["x", "y"],
                 "rule": {"cases": [], "default": "x"}},
                formula({"rt": 1.0}, ["rt"]),
            ],
            "formula: 'rt' has no score (kind rule)",
        ),
        (
            [formula({"rating": 1.0}, [])],
            "formula: 'rating' reads 'rating', which is not in depends_on",
        ),
    ],
)  # fmt: skip
def test_formula_definitions_the_loader_refuses(
    write_capabilities: Write, definitions: list[dict[str, Any]], message: str
):
    assert message in problems(write_capabilities, *definitions)


def regex(*labels: dict[str, Any]) -> dict[str, Any]:
    return {"name": "rx", "kind": "regex", "labels": list(labels)}


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            regex({"name": "both", "pattern": "x", "builtin": "email"}),
            "label 'both': give exactly one of `pattern` and `builtin`",
        ),
        (regex({"name": "neither"}), "label 'neither': give exactly one of `pattern`"),
        (regex({"name": "bad", "pattern": "(unclosed"}), "label 'bad': pattern is not a valid"),
        (regex({"name": "empty", "pattern": "a*"}), "label 'empty': pattern matches the empty"),
        (regex({"name": "x", "builtin": "passport"}), "builtin"),
        (regex(), "kind 'regex' needs at least one label"),
        (
            {"name": "rx", "kind": "regex", "model": "minilm",
             "labels": [{"name": "x", "pattern": "x"}]},
            "kind 'regex' uses no model, but model is set",
        ),
        (
            TOPIC | {"labels": [{"name": "a", "pattern": "x"}, "b"]},
            "label 'a': pattern/builtin need kind 'regex'",
        ),
    ],
)  # fmt: skip
def test_regex_definitions_the_loader_refuses(
    write_capabilities: Write, definition: dict[str, Any], message: str
):
    assert message in problems(write_capabilities, definition)


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            TOPIC | {"name": "gated", "depends_on": [], "when": "topic.label == 'a'"},
            "when: condition reads ['topic'], which are not in depends_on ([])",
        ),
        (
            TOPIC | {"name": "gated", "depends_on": ["topic"], "when": "topic.label =="},
            "when: condition is not a valid expression",
        ),
        (
            TOPIC | {"name": "gated", "depends_on": ["topic"], "when": "__import__('os')"},
            "when: condition the only function allowed is len(x)",
        ),
        (
            TOPIC | {"name": "gated", "depends_on": ["topic"], "when": "topic == 'a'"},
            "when: condition 'topic' is a whole result",
        ),
        (
            {"name": "rt", "kind": "rule", "depends_on": ["topic"], "labels": ["x", "y"],
             "rule": {"cases": [{"when": "rating.score > 0.5", "label": "x"}], "default": "y"}},
            "rule case 0: condition reads ['rating'], which are not in depends_on",
        ),
        (
            {"name": "rt", "kind": "rule", "depends_on": ["topic"], "labels": ["x", "y"],
             "rule": {"cases": [{"when": "topic.label ==", "label": "x"}], "default": "y"}},
            "rule case 0: condition is not a valid expression",
        ),
        (
            {"name": "rt", "kind": "rule", "depends_on": ["topic"], "labels": ["x", "y"],
             "rule": {"cases": [{"when": {"topic": "a"}, "label": "x",
                                 "details": {"matched": 1}}],
                      "default": "y", "default_details": {"inputs": 2}}},
            "rule case 0: details may not use ['matched'] (the rule writes them)",
        ),
        (
            {"name": "rt", "kind": "rule", "depends_on": ["topic"], "labels": ["x", "y"],
             "rule": {"cases": [], "default": "y", "default_details": {"inputs": 2}}},
            "rule default_details: details may not use ['inputs']",
        ),
    ],
)  # fmt: skip
def test_conditions_the_loader_refuses(
    write_capabilities: Write, definition: dict[str, Any], message: str
):
    assert message in problems(write_capabilities, TOPIC, SCORE, definition)


def test_a_valid_pack_of_the_new_kinds_loads(write_capabilities: Write):
    gated = TOPIC | {"name": "gated", "depends_on": ["pii"], "when": "pii.count > 0"}
    registry = load(write_capabilities, PII, gated, SCORE, formula({"rating": 1.0}, ["rating"]))
    assert {"pii", "gated", "calc"} <= set(registry.names())
