"""The executor applies `when` before a step's processor runs: a text the condition rules out,
or whose dependency was skipped or gave an error result, gets a skipped result and never
reaches the processor; the skips are counted."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from capabilities.plan import WorkItem, build_plan
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import ItemOutcome, Processor, ProcessorInput, WindowContext
from processors.formula import FormulaProcessor
from processors.rule import RuleProcessor
from server.execution.executor import PlanExecutor, WindowOutcome
from tests.unit.fakes import SHIPPED_RUNNERS


@dataclass
class LabelFromText:
    """A deterministic fake model: a text's label is the first label named in it (else the last
    label), with a score of 0.9 when named; a text holding "broken" gets an error result.
    Counts the texts each capability is asked about."""

    kind: str = "fake"
    seen: dict[str, list[str]] = field(default_factory=dict)

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        self.seen.setdefault(spec.name, []).extend(item.text for item in inputs)
        return [self._answer(spec, item.text) for item in inputs]

    @staticmethod
    def _answer(spec: CapabilitySpec, text: str) -> CapabilityResult:
        if "broken" in text:
            return CapabilityResult.failed_output(spec.name, spec.version, "ValueError")
        named = [name for name in spec.label_names if name in text]
        label = named[0] if named else spec.label_names[-1]
        probabilities = {name: (0.9 if name == label else 0.1) for name in spec.label_names}
        score = 0.9 if named else None
        return CapabilityResult(spec.name, spec.version, label, 0.9, probabilities, score=score)


class Processors:
    """Rules and formulas run for real; every model kind runs on the fake."""

    def __init__(self) -> None:
        self.fake = LabelFromText()
        self.rule = RuleProcessor()
        self.formula = FormulaProcessor()

    def processor_for(self, spec: CapabilitySpec) -> Processor:
        model_free: dict[str, Processor] = {"rule": self.rule, "formula": self.formula}
        return model_free.get(spec.kind, self.fake)


def model(name: str, labels: list[Any], **extra: Any) -> dict[str, Any]:
    base = {"name": name, "kind": "embedding_similarity", "model": "minilm", "labels": labels}
    return base | extra


DAG = [
    model("topic", ["sports", "tech", "other"]),
    # Runs only on sports texts.
    model("gated", ["fast", "slow"], depends_on=["topic"], when="topic.label == 'sports'"),
    # Depends on a capability that is skipped for non-sports texts.
    model("after_gated", ["good", "bad"], depends_on=["gated"]),
    {
        "name": "after_gated_rule",
        "kind": "rule",
        "depends_on": ["gated"],
        "labels": ["hurry", "relax"],
        "rule": {
            "cases": [{"when": "gated.label == 'fast'", "label": "hurry"}],
            "default": "relax",
        },
    },
    # A condition that cannot be evaluated on texts whose topic has no score.
    model("scored_only", ["yes", "no"], depends_on=["topic"], when="topic.score > 0.5"),
    # Unconditional, but after a dependency that may give an error result.
    model("after_topic", ["up", "down"], depends_on=["topic"]),
]

TEXTS = ["sports fast news", "tech slow review", "sports slow match", "weather today"]


@pytest.fixture
def registry(write_capabilities: Callable[..., Path]) -> CapabilityRegistry:
    return CapabilityRegistry.from_directory(write_capabilities(*DAG), SHIPPED_RUNNERS)


async def run(
    registry: CapabilityRegistry, texts: list[str], capabilities: list[str]
) -> tuple[WindowOutcome, Processors, list[str]]:
    processors = Processors()
    plan = build_plan(registry, [WorkItem(tuple(texts), tuple(capabilities))])
    outcome = await PlanExecutor(registry, processors).run(plan)
    return outcome, processors, list(plan.texts)


def by_text(outcome: WindowOutcome, texts: list[str], name: str) -> dict[str, CapabilityResult]:
    return {texts[tid]: result for tid, result in outcome.results[name].items()}


async def test_only_the_texts_where_the_condition_holds_reach_the_processor(registry):
    outcome, processors, texts = await run(registry, TEXTS, ["gated"])
    assert sorted(processors.fake.seen["topic"]) == sorted(TEXTS)
    assert sorted(processors.fake.seen["gated"]) == ["sports fast news", "sports slow match"]
    results = by_text(outcome, texts, "gated")
    assert results["sports fast news"].label == "fast" and results["sports fast news"].answered
    assert results["sports slow match"].label == "slow"
    for text in ("tech slow review", "weather today"):
        assert results[text].skipped == "condition not met: topic.label == 'sports'"
        assert results[text].label is None and results[text].error is None
    assert outcome.skipped == {"gated": 2}
    assert outcome.failures["gated"] == {}


async def test_a_dependent_of_a_skipped_result_is_skipped_too(registry):
    outcome, processors, texts = await run(registry, TEXTS, ["after_gated", "after_gated_rule"])
    assert sorted(processors.fake.seen["after_gated"]) == ["sports fast news", "sports slow match"]
    for name in ("after_gated", "after_gated_rule"):
        results = by_text(outcome, texts, name)
        assert results["tech slow review"].skipped == "dependency 'gated' was skipped"
        assert results["weather today"].skipped == "dependency 'gated' was skipped"
        assert results["sports fast news"].answered
    assert by_text(outcome, texts, "after_gated_rule")["sports fast news"].label == "hurry"
    assert by_text(outcome, texts, "after_gated_rule")["sports slow match"].label == "relax"
    assert outcome.skipped == {"gated": 2, "after_gated": 2, "after_gated_rule": 2}


async def test_an_error_result_of_a_dependency_makes_its_dependents_skip(registry):
    texts_in = ["tech broken gadget", "tech fine gadget", "sports broken bat"]
    outcome, processors, texts = await run(registry, texts_in, ["after_topic", "gated"])
    topic = by_text(outcome, texts, "topic")
    assert topic["tech broken gadget"].error == "ValueError"
    assert processors.fake.seen["after_topic"] == ["tech fine gadget"]
    assert "gated" not in processors.fake.seen  # the only sports text has a broken topic
    for name in ("after_topic", "gated"):
        for text in ("tech broken gadget", "sports broken bat"):
            reason = by_text(outcome, texts, name)[text].skipped
            assert reason == "dependency 'topic' gave no usable output (ValueError)"
    # An error result is not a failure: the text's other results are kept.
    assert outcome.failures["after_topic"] == {} and outcome.failures["gated"] == {}
    assert outcome.skipped == {"after_topic": 2, "gated": 3}


async def test_a_condition_that_cannot_be_evaluated_skips_the_text_with_its_reason(registry):
    # "weather today" names no topic label: its topic has no score, and None > 0.5 fails.
    texts_in = ["tech news", "weather today"]
    outcome, processors, texts = await run(registry, texts_in, ["scored_only"])
    assert processors.fake.seen["scored_only"] == ["tech news"]
    reason = by_text(outcome, texts, "scored_only")["weather today"].skipped
    assert reason is not None and reason.startswith("condition could not be evaluated: TypeError")
    assert outcome.skipped == {"scored_only": 1}


async def test_when_every_text_is_skipped_the_processor_is_never_called(registry):
    outcome, processors, _ = await run(registry, ["tech a", "tech b"], ["after_gated"])
    assert "gated" not in processors.fake.seen and "after_gated" not in processors.fake.seen
    assert outcome.skipped == {"gated": 2, "after_gated": 2}
    assert "gated" not in outcome.seconds


async def test_known_skipped_results_make_their_dependents_skip(registry):
    """A skipped result from the result cache counts like one computed in the window."""
    spec = registry.get("gated")
    cached = CapabilityResult.skip(spec.name, spec.version, "condition not met")
    processors = Processors()
    plan = build_plan(
        registry, [WorkItem(("sports x",), ("after_gated",))], known={("gated", "sports x"): cached}
    )
    outcome = await PlanExecutor(registry, processors).run(plan, plan.known)
    assert processors.fake.seen == {}
    assert outcome.results["after_gated"][0].skipped == "dependency 'gated' was skipped"
    assert outcome.skipped == {"after_gated": 1}


async def test_a_rule_with_a_when_and_expression_cases(write_capabilities):
    directory = write_capabilities(
        model("topic", ["sports", "tech", "other"]),
        {
            "name": "triage",
            "kind": "rule",
            "depends_on": ["topic"],
            "when": "topic.label != 'other'",
            "labels": ["priority", "normal"],
            "rule": {
                "cases": [
                    {
                        "when": "topic.label == 'sports' and topic.confidence > 0.5",
                        "label": "priority",
                        "details": {"tier": "large"},
                    }
                ],
                "default": "normal",
                "default_details": {"tier": "small"},
            },
        },
    )
    registry = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS)
    outcome, _, texts = await run(registry, ["sports", "tech", "nothing"], ["triage"])
    results = by_text(outcome, texts, "triage")
    assert results["sports"].label == "priority"
    assert results["sports"].details["tier"] == "large"
    assert results["sports"].details["matched"] == "case 0"
    assert results["tech"].label == "normal" and results["tech"].details["tier"] == "small"
    assert results["nothing"].skipped == "condition not met: topic.label != 'other'"
    assert outcome.skipped == {"triage": 1}


async def test_a_formula_runs_only_where_its_condition_holds(write_capabilities):
    # Labels with values: the topic's results carry a score (the fake's 0.9 when named).
    valued = [{"name": name, "value": 1.0} for name in ("sports", "tech", "other")]
    directory = write_capabilities(
        model("topic", valued),
        {
            "name": "weight",
            "kind": "formula",
            "depends_on": ["topic"],
            "when": "topic.label == 'sports'",
            "formula": {"terms": {"topic": 0.5}},
        },
    )
    registry = CapabilityRegistry.from_directory(directory, SHIPPED_RUNNERS)
    outcome, _, texts = await run(registry, ["sports", "tech"], ["weight"])
    results = by_text(outcome, texts, "weight")
    assert results["sports"].score == pytest.approx(0.45)
    assert results["tech"].skipped is not None and results["tech"].score is None


def test_only_results_that_cannot_change_are_cacheable():
    answered = CapabilityResult("a", "v", "x", 1.0, {"x": 1.0})
    by_condition = CapabilityResult.skip("a", "v", "condition not met: b.score > 1")
    by_upstream = CapabilityResult.skip("a", "v", "dependency 'b' gave no usable output (x)")
    error = CapabilityResult.failed_output("a", "v", "truncated")
    assert answered.cacheable and by_condition.cacheable
    assert not by_upstream.cacheable and not error.cacheable
