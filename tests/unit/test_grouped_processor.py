"""as_grouped: which processors answer several capabilities in one call (processors.base)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from capabilities.spec import CapabilitySpec
from processors.base import (
    GroupedProcessor,
    ItemOutcome,
    ProcessorInput,
    StepWork,
    WindowContext,
    as_grouped,
)


class Single:
    kind = "single"

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> Sequence[ItemOutcome]:
        return []


class Grouped(Single):
    kind = "grouped"

    def group_key(self, spec: CapabilitySpec) -> Hashable:
        return "engine"

    async def run_group(
        self, work: Sequence[StepWork], context: WindowContext
    ) -> Sequence[Sequence[ItemOutcome]]:
        return [[] for _ in work]


def test_as_grouped_answers_as_the_protocol_does_and_remembers_the_class():
    grouped, single = Grouped(), Single()
    assert as_grouped(grouped) is grouped
    assert as_grouped(single) is None
    assert as_grouped(None) is None
    # Asked again (the cached answer per class), the same; and as isinstance says.
    assert as_grouped(Grouped()) is not None and as_grouped(Single()) is None
    assert isinstance(grouped, GroupedProcessor) and not isinstance(single, GroupedProcessor)
