"""A deterministic fake processor pool for unit tests of the batcher, registry, plan and API.

Only unit tests use it: integration tests run the real vLLM engines.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capabilities.outputs import single_label_result
from capabilities.results import CapabilityResult, normalise
from capabilities.spec import CapabilitySpec
from processors.base import ItemFailure, ItemOutcome, Processor, ProcessorInput, WindowContext
from processors.engine_status import EngineStatus, EngineWork
from processors.formula import FormulaProcessor
from processors.regex import RegexProcessor
from processors.rule import RuleProcessor

SHIPPED_CAPABILITIES = Path(__file__).resolve().parents[2] / "configs" / "capabilities"
# A frozen capability set for tests of mechanisms (plans, pipeline, cache keys, API shapes):
# the pack as it was before the seed pack, with LLM questions of every kind, an embedding
# capability and a two-deep chain (route -> complexity -> task_type). It does not change when
# the shipped pack does.
CLASSIC_CAPABILITIES = Path(__file__).resolve().parents[1] / "data" / "classic_capabilities"
SHIPPED_RUNNERS = {"smollm2": "generate", "minilm": "pooling"}


def fake_probabilities(spec: CapabilitySpec, text: str) -> dict[str, float]:
    """Deterministic scores from a hash of (capability, text)."""
    scores = {}
    for label in spec.label_names:
        digest = hashlib.sha256(f"{spec.name}|{label}|{text}".encode()).digest()
        scores[label] = 1.0 + digest[0]
    return normalise(scores)


def fake_result(spec: CapabilitySpec, text: str) -> CapabilityResult:
    """A deterministic result of the spec's kind."""
    digest = hashlib.sha256(f"{spec.name}|{text}".encode()).digest()
    if spec.kind == "llm_score":
        score = digest[0] / 255
        return CapabilityResult(spec.name, spec.version, None, 1.0, {}, score=score)
    if spec.kind in ("llm_multilabel", "embedding_multilabel"):
        probabilities = {label: fake_probabilities(spec, text)[label] for label in spec.label_names}
        passing = tuple(name for name, p in probabilities.items() if p >= 0.5)
        top = passing[0] if passing else None
        return CapabilityResult(spec.name, spec.version, top, 1.0, probabilities, labels=passing)
    if spec.kind == "llm_json":
        fields = fake_json(spec.definition.output_schema or {})
        assert isinstance(fields, dict)
        field = spec.definition.label_field
        label = str(fields[field]) if field else None
        return CapabilityResult(spec.name, spec.version, label, 1.0, {}, fields=fields)
    return single_label_result(spec, fake_probabilities(spec, text))


def fake_json(schema: dict[str, Any]) -> Any:
    """The simplest value that follows a (simple) JSON schema: the first enum value, empty
    strings and arrays, objects with every property."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: fake_json(sub) for name, sub in schema.get("properties", {}).items()}
    return {"array": [], "string": "", "integer": 0, "number": 0.0, "boolean": False}.get(str(kind))


@dataclass
class Call:
    capability: str
    texts: tuple[str, ...]
    deps: tuple[dict[str, str | None], ...]


@dataclass
class FakeProcessor:
    kind: str = "fake"
    delay: float = 0.0
    fail_on: set[str] = field(default_factory=set)  # capabilities that raise
    fail_texts: set[str] = field(default_factory=set)  # texts that fail on their own
    fail_reason: str = "RuntimeError"  # the reason those texts fail with
    calls: list[Call] = field(default_factory=list)
    running: int = 0
    max_running: int = 0

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        self.calls.append(
            Call(
                spec.name,
                tuple(i.text for i in inputs),
                tuple({d: r.label for d, r in i.deps.items()} for i in inputs),
            )
        )
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if spec.name in self.fail_on:
            raise RuntimeError("engine exploded while reading: SECRET PROMPT TEXT")
        return [
            ItemFailure(self.fail_reason)
            if i.text in self.fail_texts
            else fake_result(spec, i.text)
            for i in inputs
        ]


class FakePool:
    """Implements the Pool protocol without engines."""

    def __init__(self, processor: FakeProcessor | None = None) -> None:
        self.processor = processor or FakeProcessor()
        # The kinds that use no model run for real.
        self.modelless: dict[str, Processor] = {
            "rule": RuleProcessor(),
            "regex": RegexProcessor(),
            "formula": FormulaProcessor(),
        }
        self.started = 0
        self.stopped = 0

    @property
    def engine_constructions(self) -> int:
        return 0

    async def start(self) -> None:
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1

    async def health(self) -> dict[str, str]:
        return {"fake": "ok"}

    def work(self) -> dict[str, EngineWork]:
        return {"fake": EngineWork()}

    def engine_states(self) -> dict[str, EngineStatus]:
        return {"fake": EngineStatus("fake", "ready" if self.started > self.stopped else "stopped")}

    def replica_states(self) -> dict[str, list[EngineStatus]]:
        return {
            name: [EngineStatus(name, state.state, replica=0)]
            for name, state in self.engine_states().items()
        }

    def replica_work(self) -> dict[str, list[EngineWork]]:
        return {name: [work] for name, work in self.work().items()}

    def processor_for(self, spec: CapabilitySpec) -> Processor:
        return self.modelless.get(spec.kind, self.processor)

    def executions(self, capability: str) -> list[Call]:
        return [c for c in self.processor.calls if c.capability == capability]
