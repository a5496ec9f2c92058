"""What answers a batch of the job's texts: the server over HTTP (the client), or an
in-process runtime (in_process.py). Either gives one outcome per text and never raises for a
failed batch: its texts get error outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from client.async_client import AsyncCapserveClient
from client.errors import CapserveError
from client.many import TextOutcome, outcomes_of_batch, outcomes_of_error
from schemas.api import Priority


class BatchClassifier(Protocol):
    async def __call__(self, texts: list[str]) -> list[TextOutcome]: ...

    async def known_capabilities(self) -> set[str]:
        """The names the server has (raises CapserveError, e.g. AuthError)."""
        ...


@dataclass
class HttpClassifier:
    client: AsyncCapserveClient
    capabilities: Sequence[str]
    priority: Priority = "normal"
    timeout_ms: int | None = None

    async def __call__(self, texts: list[str]) -> list[TextOutcome]:
        try:
            response = await self.client.classify(
                texts, self.capabilities, priority=self.priority, timeout_ms=self.timeout_ms
            )
        except CapserveError as exc:
            return outcomes_of_error(len(texts), exc)
        return outcomes_of_batch(len(texts), response)

    async def known_capabilities(self) -> set[str]:
        return {c.name for c in (await self.client.capabilities()).capabilities}
