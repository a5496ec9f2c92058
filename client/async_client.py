"""`AsyncCapserveClient`: the asyncio twin of CapserveClient (httpx.AsyncClient)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from client.errors import CapserveError, error_from_transport
from client.many import TextOutcome, batched, outcomes_of_batch, outcomes_of_error, stream_batches
from client.request import DEFAULT_TIMEOUT_S, Model, auth_headers, classify_body, parse
from client.retry import RetryPolicy, RetryState
from schemas.api import CapabilitiesResponse, ClassifyResponse, Priority

Key = TypeVar("Key")


class AsyncCapserveClient:
    """`api_key` (sent as X-API-Key) or `token` (a JWT, sent as a bearer token); `retry`
    bounds the retries of 429, 503 and connection errors."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=auth_headers(api_key, token),
            timeout=timeout_s,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncCapserveClient:
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def classify(
        self,
        texts: Sequence[str],
        capabilities: Sequence[str],
        *,
        priority: Priority = "normal",
        timeout_ms: int | None = None,
        include_dependencies: bool = False,
    ) -> ClassifyResponse:
        """POST /classify; raises a CapserveError subclass when the request fails."""
        body = classify_body(texts, capabilities, priority, timeout_ms, include_dependencies)
        return await self._request("POST", "/classify", ClassifyResponse, json=body)

    async def capabilities(self) -> CapabilitiesResponse:
        return await self._request("GET", "/capabilities", CapabilitiesResponse)

    async def classify_many(
        self,
        texts: Iterable[str],
        capabilities: Sequence[str],
        *,
        batch_size: int = 32,
        concurrency: int = 4,
        priority: Priority = "normal",
        timeout_ms: int | None = None,
    ) -> list[TextOutcome]:
        """Every text's outcome, in input order: requests of `batch_size` texts, at most
        `concurrency` in flight. A failed request gives error outcomes for its texts only."""
        outcomes: list[TextOutcome] = []
        batches = batched(texts, batch_size)
        async for start, batch in self.stream_many(
            batches, capabilities, concurrency, priority=priority, timeout_ms=timeout_ms
        ):
            outcomes.extend(o.shifted(start) for o in batch)
        return sorted(outcomes, key=lambda o: o.index)

    def stream_many(
        self,
        batches: Iterable[tuple[Key, list[str]]],
        capabilities: Sequence[str],
        concurrency: int = 4,
        *,
        priority: Priority = "normal",
        timeout_ms: int | None = None,
    ) -> AsyncIterator[tuple[Key, list[TextOutcome]]]:
        """Each batch's outcomes as soon as its request ends (not in input order), with the
        key it came with; an outcome's index is its text's position in its batch. Batches are
        taken from `batches` only as requests are sent (a long file is not read at once)."""

        async def one(chunk: list[str]) -> list[TextOutcome]:
            try:
                response = await self.classify(
                    chunk, capabilities, priority=priority, timeout_ms=timeout_ms
                )
            except CapserveError as exc:
                return outcomes_of_error(len(chunk), exc)
            return outcomes_of_batch(len(chunk), response)

        return stream_batches(one, batches, concurrency)

    async def _request(self, method: str, path: str, model: type[Model], **kwargs: Any) -> Model:
        state = RetryState(self.retry)
        while True:
            try:
                return parse(await self._http.request(method, path, **kwargs), model)
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                error: CapserveError = error_from_transport(exc)
            except CapserveError as exc:
                error = exc
            delay = state.next_delay(error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
