"""The `formula` processor: no engine, a number computed from dependency results."""

from __future__ import annotations

from collections.abc import Sequence

from capabilities.formulas import evaluate_formula
from capabilities.spec import CapabilitySpec
from processors.base import ItemOutcome, ProcessorInput, WindowContext


class FormulaProcessor:
    kind = "formula"

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> Sequence[ItemOutcome]:
        return [evaluate_formula(spec, item.deps) for item in inputs]
