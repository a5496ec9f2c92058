"""The layout benchmark's count of generated list items copied from a prompt's instructions."""

from __future__ import annotations

from bench.layouts import GeneratedItems, generated_items
from capabilities.results import CapabilityResult

INSTRUCTIONS = 'Examples:\n{"hints": ["Name the programming language", "Say how long"]}\n'


def json_result(hints: list[str], error: str | None = None) -> CapabilityResult:
    fields = None if error else {"model_tier": "small", "hints": hints}
    return CapabilityResult("recommendations", "v1", "small", 1.0, {}, fields=fields, error=error)


def test_generated_items_are_the_list_strings_of_a_json_answer() -> None:
    result = json_result(["Name the programming language", "Give an example input"])
    assert generated_items(result) == ["Name the programming language", "Give an example input"]
    score = CapabilityResult("reasoning", "v1", None, 1.0, {}, score=0.5, fields={"x": ["a"]})
    assert generated_items(score) == []


def test_copied_items_are_counted_against_the_instructions() -> None:
    items = GeneratedItems()
    items.add(json_result(["Name the programming language", "State the data to use"]), INSTRUCTIONS)
    items.add(json_result(["Say how long", "Say"]), INSTRUCTIONS)  # "Say": too short to count
    items.add(json_result([], error="truncated"), INSTRUCTIONS)
    assert (items.items, items.copied, items.errors) == (4, 2, 1)
