from __future__ import annotations

from capabilities.plan import WorkItem, build_plan
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult


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
    classic_registry: CapabilityRegistry,
):
    plan = build_plan(
        classic_registry,
        [WorkItem(("a",), ("route",)), WorkItem(("b",), ("sentiment",))],
    )
    steps = {step.capability: step.text_ids for step in plan.steps}
    assert steps == {"task_type": (0,), "complexity": (0,), "route": (0,), "sentiment": (1,)}
    order = [step.capability for step in plan.steps]
    assert order.index("task_type") < order.index("complexity") < order.index("route")
    assert plan.requests[0].closure == ("task_type", "complexity", "route")


def known_result(registry: CapabilityRegistry, name: str, text: str) -> CapabilityResult:
    spec = registry.get(name)
    return CapabilityResult(name, spec.version, spec.label_names[0], 1.0, {})


def test_known_results_are_subtracted_with_the_dependencies_they_spare(
    classic_registry: CapabilityRegistry,
):
    route_a = known_result(classic_registry, "route", "a")
    complexity_b = known_result(classic_registry, "complexity", "b")
    plan = build_plan(
        classic_registry,
        [WorkItem(("a", "b", "c"), ("route",))],
        known={("route", "a"): route_a, ("complexity", "b"): complexity_b},
    )
    steps = {step.capability: step.text_ids for step in plan.steps}
    # a: route known, nothing to compute. b: complexity known, not computed; route and the
    # task_type route reads are. c: everything is computed.
    assert steps == {"task_type": (1, 2), "complexity": (2,), "route": (1, 2)}
    assert plan.known == {"route": {0: route_a}, "complexity": {1: complexity_b}}
    assert plan.text_executions_without_known == 9
    assert plan.text_executions == 5 and plan.text_executions_saved == 4
    assert plan.capability_executions == 3 and plan.naive_equivalent_executions == 3


def test_steps_with_every_text_known_are_dropped(classic_registry: CapabilityRegistry):
    known = {("sentiment", "x"): known_result(classic_registry, "sentiment", "x")}
    plan = build_plan(classic_registry, [WorkItem(("x",), ("sentiment", "topic"))], known=known)
    assert [(s.capability, s.text_ids) for s in plan.steps] == [("topic", (0,))]
    assert plan.is_known("sentiment", 0) and not plan.is_known("topic", 0)


def test_known_results_unused_by_the_window_are_left_out(classic_registry: CapabilityRegistry):
    known = {
        ("route", "x"): known_result(classic_registry, "route", "x"),
        ("task_type", "x"): known_result(classic_registry, "task_type", "x"),  # not needed
    }
    plan = build_plan(classic_registry, [WorkItem(("x",), ("route",))], known=known)
    assert plan.steps == () and set(plan.known) == {"route"}


def test_returned_dependencies_are_needed_even_when_the_dependent_is_known(
    classic_registry: CapabilityRegistry,
):
    known = {("complexity", "x"): known_result(classic_registry, "complexity", "x")}
    plan = build_plan(
        classic_registry,
        [WorkItem(("x",), ("complexity",), include_dependencies=True)],
        known=known,
    )
    assert [(s.capability, s.text_ids) for s in plan.steps] == [("task_type", (0,))]
    assert plan.requests[0].returned == ("task_type", "complexity")


def test_without_dedup_every_occurrence_is_its_own_text(seed_registry: CapabilityRegistry):
    plan = build_plan(
        seed_registry,
        [WorkItem(("same", "same"), ("classification",)), WorkItem(("same",), ("alerts",))],
        dedup=False,
    )
    assert plan.texts == ("same", "same", "same")
    assert plan.requests[0].text_ids == (0, 1) and plan.requests[1].text_ids == (2,)
    steps = {step.capability: step.text_ids for step in plan.steps}
    assert steps == {"classification": (0, 1, 2), "alerts": (2,)}
