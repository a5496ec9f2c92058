"""Many texts through many requests: split into batches, at most N requests in flight, and
every text's outcome kept, a failed request costing only its own texts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from typing import TypeVar

from client.errors import CapserveError
from schemas.api import ClassifyResponse, TextResultBody

Key = TypeVar("Key")


@dataclass(frozen=True)
class TextOutcome:
    """One text's outcome: the server's result (which may hold a per-text `error`), or the
    error of the request its batch was in."""

    index: int
    result: TextResultBody | None = None
    error: CapserveError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None and self.result.error is None

    def shifted(self, offset: int) -> TextOutcome:
        """The same outcome, `offset` further in the input."""
        return replace(self, index=self.index + offset)


def batched(texts: Iterable[str], size: int) -> Iterator[tuple[int, list[str]]]:
    """(position of the batch's first text, its texts), `size` texts at a time."""
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    it = iter(texts)
    start = 0
    while chunk := list(islice(it, size)):
        yield start, chunk
        start += len(chunk)


def outcomes_of_batch(count: int, response: ClassifyResponse) -> list[TextOutcome]:
    """Outcomes 0..count-1 from the answer to a request of `count` texts."""
    if len(response.results) != count:
        error = CapserveError(
            f"{len(response.results)} results for {count} texts", 200, "invalid_response"
        )
        return outcomes_of_error(count, error)
    by_index = sorted(response.results, key=lambda r: r.index)
    return [TextOutcome(i, result=r) for i, r in enumerate(by_index)]


def outcomes_of_error(count: int, error: CapserveError) -> list[TextOutcome]:
    return [TextOutcome(i, error=error) for i in range(count)]


async def stream_batches(
    classify: Callable[[list[str]], Awaitable[list[TextOutcome]]],
    batches: Iterable[tuple[Key, list[str]]],
    concurrency: int,
) -> AsyncIterator[tuple[Key, list[TextOutcome]]]:
    """Runs `classify` on each batch, at most `concurrency` at once, and yields (key,
    outcomes) as each ends. Closing the iterator early cancels the requests in flight."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    pending: dict[asyncio.Task[list[TextOutcome]], Key] = {}
    source = iter(batches)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < concurrency:
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                    break
                key, chunk = nxt
                pending[asyncio.ensure_future(classify(chunk))] = key
            if not pending:
                return
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                yield pending.pop(task), task.result()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
