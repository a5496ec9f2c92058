"""`CapserveClient`: the blocking client (httpx.Client), with retries."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import httpx

from client.errors import CapserveError, error_from_transport
from client.many import TextOutcome, batched, outcomes_of_batch, outcomes_of_error
from client.request import DEFAULT_TIMEOUT_S, Model, auth_headers, classify_body, parse
from client.retry import RetryPolicy, RetryState
from schemas.api import CapabilitiesResponse, ClassifyResponse, Priority


class CapserveClient:
    """`api_key` (sent as X-API-Key) or `token` (a JWT, sent as a bearer token); `retry`
    bounds the retries of 429, 503 and connection errors. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=base_url,
            headers=auth_headers(api_key, token),
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> CapserveClient:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def classify(
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
        return self._request("POST", "/classify", ClassifyResponse, json=body)

    def capabilities(self) -> CapabilitiesResponse:
        return self._request("GET", "/capabilities", CapabilitiesResponse)

    def classify_many(
        self,
        texts: Iterable[str],
        capabilities: Sequence[str],
        *,
        batch_size: int = 32,
        concurrency: int = 4,
        priority: Priority = "normal",
        timeout_ms: int | None = None,
    ) -> list[TextOutcome]:
        """Every text's outcome, in input order: requests of `batch_size` texts, `concurrency`
        at a time (threads). A failed request gives error outcomes for its texts only."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")

        def one(batch: tuple[int, list[str]]) -> list[TextOutcome]:
            start, chunk = batch
            try:
                response = self.classify(
                    chunk, capabilities, priority=priority, timeout_ms=timeout_ms
                )
            except CapserveError as exc:
                return [o.shifted(start) for o in outcomes_of_error(len(chunk), exc)]
            return [o.shifted(start) for o in outcomes_of_batch(len(chunk), response)]

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return [o for batch in pool.map(one, batched(texts, batch_size)) for o in batch]

    def _request(self, method: str, path: str, model: type[Model], **kwargs: Any) -> Model:
        state = RetryState(self.retry)
        while True:
            try:
                return parse(self._http.request(method, path, **kwargs), model)
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                error: CapserveError = error_from_transport(exc)
            except CapserveError as exc:
                error = exc
            delay = state.next_delay(error)
            if delay is None:
                raise error
            time.sleep(delay)
