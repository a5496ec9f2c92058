"""The `classifier` processor: a sequence-classification model on vLLM's pooling runner."""
# Placeholder: being built.

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from capabilities.spec import CapabilitySpec
from processors.base import ItemOutcome, ProcessorInput, WindowContext


class ClassifierProcessor:
    kind = "classifier"

    def __init__(self, *args: Any) -> None:
        self._args = args

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> Sequence[ItemOutcome]:
        raise NotImplementedError(f"kind '{spec.kind}' is not built yet")
