"""The `rule` processor: no engine, a pure function of dependency results."""

from __future__ import annotations

from collections.abc import Sequence

from capabilities.results import CapabilityResult
from capabilities.rules import evaluate_rule
from capabilities.spec import CapabilitySpec
from processors.base import ProcessorInput, WindowContext


class RuleProcessor:
    kind = "rule"

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[CapabilityResult]:
        return [evaluate_rule(spec, item.deps) for item in inputs]
