"""The `formula` processor: a number computed from dependency results, no model."""
# Placeholder: being built.

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from capabilities.spec import CapabilitySpec
from processors.base import ItemOutcome, ProcessorInput, WindowContext


class FormulaProcessor:
    kind = "formula"

    def __init__(self, *args: Any) -> None:
        self._args = args

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> Sequence[ItemOutcome]:
        raise NotImplementedError(f"kind '{spec.kind}' is not built yet")
