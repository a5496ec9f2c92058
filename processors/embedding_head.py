"""The `embedding_head` processor: a logistic regression over the shared text embedding."""
# Placeholder: being built.

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from capabilities.spec import CapabilitySpec
from processors.base import ItemOutcome, ProcessorInput, WindowContext


class EmbeddingHeadProcessor:
    kind = "embedding_head"

    def __init__(self, *args: Any) -> None:
        self._args = args

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> Sequence[ItemOutcome]:
        raise NotImplementedError(f"kind '{spec.kind}' is not built yet")
