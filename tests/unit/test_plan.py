from __future__ import annotations

from capabilities.plan import WorkItem, build_plan
from capabilities.registry import CapabilityRegistry


def test_seed_001_example_runs_each_capability_once(seed_registry: CapabilityRegistry):
    plan = build_plan(
        seed_registry,
        [
            WorkItem(("text A",), ("classification",)),
            WorkItem(("text B",), ("classification", "recommendations")),
            WorkItem(("text C",), ("classification", "alerts")),
        ],
    )
    steps = {step.capability: step.text_ids for step in plan.steps}
    assert steps == {"classification": (0, 1, 2), "recommendations": (1,), "alerts": (2,)}
    assert plan.capability_executions == 3
    assert plan.naive_equivalent_executions == 5
    assert plan.steps[0].capability == "classification"


def test_texts_are_deduplicated_across_requests(seed_registry: CapabilityRegistry):
    plan = build_plan(
        seed_registry,
        [
            WorkItem(("same", "other"), ("classification",)),
            WorkItem(("same",), ("alerts",)),
            WorkItem(("same", "same"), ("classification",)),
        ],
    )
    assert plan.texts == ("same", "other")
    assert plan.total_texts == 5
    assert plan.requests[2].text_ids == (0, 0)
    steps = {step.capability: step.text_ids for step in plan.steps}
    assert steps == {"classification": (0, 1), "alerts": (0,)}


def test_dependencies_are_planned_for_the_texts_that_need_them(
    shipped_registry: CapabilityRegistry,
):
    plan = build_plan(
        shipped_registry,
        [WorkItem(("a",), ("route",)), WorkItem(("b",), ("sentiment",))],
    )
    steps = {step.capability: step.text_ids for step in plan.steps}
    assert steps == {"task_type": (0,), "complexity": (0,), "route": (0,), "sentiment": (1,)}
    order = [step.capability for step in plan.steps]
    assert order.index("task_type") < order.index("complexity") < order.index("route")
    assert plan.requests[0].closure == ("task_type", "complexity", "route")
