"""The job's batches through a Runtime in this process (no server): `capserve classify` without
--url. The runtime starts real engines (vLLM spawns them: the entry point has its __main__
guard)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from client.errors import CapserveError
from client.many import TextOutcome, outcomes_of_error
from schemas.api import Priority
from server.api.response_bodies import text_body
from server.runtime import Runtime


@dataclass
class RuntimeClassifier:
    runtime: Runtime
    capabilities: Sequence[str]
    priority: Priority = "normal"
    timeout_ms: int | None = None

    async def __call__(self, texts: list[str]) -> list[TextOutcome]:
        try:
            job = await self.runtime.classify(
                texts, self.capabilities, priority=self.priority, timeout_ms=self.timeout_ms
            )
        except Exception as exc:  # the runtime's errors (admission, engine down, timeout...)
            error = CapserveError(str(exc), None, type(exc).__name__)
            return outcomes_of_error(len(texts), error)
        return [TextOutcome(i, result=text_body(job, i)) for i in range(len(texts))]

    async def known_capabilities(self) -> set[str]:
        return set(self.runtime.registry.names())
