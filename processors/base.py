"""What every processor offers: turn (capability, texts, dependency results) into results.

A text may be abandoned while a window runs: no waiting caller needs it any more (the executor
decides, see `WindowContext.abandon`). A processor runs each text's engine work through
`WindowContext.unless_abandoned`, which cancels it (vLLM then aborts the engine request) when its
text is abandoned; that text's outcome is an `ItemAbandoned`: neither a result nor a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast, runtime_checkable

from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessorInput:
    text: str
    # Results of the capability's dependencies for this text.
    deps: Mapping[str, CapabilityResult]


@dataclass(frozen=True)
class ItemFailure:
    """One text's failure inside a capability. The reason never quotes the text."""

    reason: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ItemFailure:
        if isinstance(exc, TextAbandonedError):
            return ItemAbandoned()
        return cls(type(exc).__name__)


@dataclass(frozen=True)
class ItemAbandoned(ItemFailure):
    """No waiting caller needs the text any more: its work was cancelled, and it gets neither
    a result nor a failure. An ItemFailure, so that it passes through every processor's
    failure path unchanged; the executor tells it apart."""

    reason: str = "abandoned"


class TextAbandonedError(Exception):
    """Raised by `WindowContext.unless_abandoned` when the text was abandoned first."""


ItemOutcome = CapabilityResult | ItemFailure


@dataclass
class WindowContext:
    """State shared by the capabilities of one window, e.g. text embeddings per model."""

    _memo: dict[tuple[str, str], asyncio.Future[Any]] = field(default_factory=dict)
    # Texts no waiting caller needs any more.
    _abandoned: set[str] = field(default_factory=set)
    # The per-text engine work running now, by text: cancelled when its text is abandoned.
    _running: dict[str, set[asyncio.Task[Any]]] = field(default_factory=dict)

    def abandon(self, texts: Iterable[str]) -> None:
        """From now on nobody needs `texts`: their running work is cancelled, and work that
        `unless_abandoned` would start for them is not."""
        for text in texts:
            if text in self._abandoned:
                continue
            self._abandoned.add(text)
            for task in self._running.pop(text, set()):
                task.cancel()

    def abandoned(self, text: str) -> bool:
        return text in self._abandoned

    async def unless_abandoned(self, text: str, work: Callable[[], Awaitable[T]]) -> T:
        """Runs `work()` (one text's engine work) as a task of its own, and cancels it when
        `text` is abandoned first; raises TextAbandonedError then, or at once when `text` was
        abandoned already."""
        if text in self._abandoned:
            raise TextAbandonedError()

        async def run() -> T:
            return await work()

        task = asyncio.create_task(run())
        self._running.setdefault(text, set()).add(task)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if text in self._abandoned and (current is None or not current.cancelling()):
                raise TextAbandonedError() from None
            raise  # the caller itself was cancelled (which cancelled the task too)
        finally:
            running = self._running.get(text)
            if running is not None:
                running.discard(task)
                if not running:
                    del self._running[text]

    async def shared(
        self,
        namespace: str,
        keys: Sequence[str],
        compute: Callable[[Sequence[str]], Awaitable[Iterable[Any]]],
    ) -> list[Any]:
        """Values for `keys`, each computed once per window.

        Keys nobody asked for yet are computed together in one `compute` call; keys another
        capability is already computing are awaited, not computed again.
        """
        loop = asyncio.get_running_loop()
        missing = [k for k in dict.fromkeys(keys) if (namespace, k) not in self._memo]
        futures = {k: loop.create_future() for k in missing}
        for key, future in futures.items():
            self._memo[(namespace, key)] = future
        if missing:
            try:
                values = list(await compute(missing))
                if len(values) != len(missing):
                    raise RuntimeError(f"{len(values)} values computed for {len(missing)} keys")
            except BaseException as exc:
                # Every waiter must hear of it, or capabilities sharing these keys would hang.
                for future in futures.values():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
                        future.exception()  # marks it retrieved: the error is raised below
                raise
            for key, value in zip(missing, values, strict=True):
                futures[key].set_result(value)
        return [await self._memo[(namespace, k)] for k in keys]


class PerVersion(Generic[T]):
    """A value built once per capability version; concurrent callers await the same build.

    A failed build is not kept: the next caller tries again.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], T] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get(self, spec: CapabilitySpec, build: Callable[[], Awaitable[T]]) -> T:
        key = (spec.name, spec.version)
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._values:
                self._values[key] = await build()
            return self._values[key]


class Processor(Protocol):
    kind: str

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> Sequence[ItemOutcome]:
        """One outcome per input, in order: a result, or that text's failure.

        Raising fails the capability for every input; return an ItemFailure instead when only
        some texts fail, so that the others' requests still get their results.
        """
        ...


@dataclass(frozen=True)
class StepWork:
    """One capability's share of a grouped call: its spec and the inputs it must answer."""

    spec: CapabilitySpec
    inputs: Sequence[ProcessorInput]


@runtime_checkable
class GroupedProcessor(Processor, Protocol):
    """A processor that answers several capabilities in one call when they start together,
    e.g. every LLM question about a window's texts on one engine (text-major, so a text's
    questions reach the engine together and share its prefill)."""

    def group_key(self, spec: CapabilitySpec) -> Hashable:
        """Capabilities with equal keys that start together are run in one `run_group`."""
        ...

    async def run_group(
        self, work: Sequence[StepWork], context: WindowContext
    ) -> Sequence[Sequence[ItemOutcome]]:
        """One sequence of outcomes per StepWork, in order, one outcome per input."""
        ...


# Whether each processor class is a GroupedProcessor. A runtime-checkable protocol's isinstance
# walks every member of the protocol on each call (about 10 us on Python 3.11), and the
# executor asks it for every batch of every wave; a class's answer does not change.
_GROUPED_CLASSES: dict[type, bool] = {}


def as_grouped(processor: Processor | None) -> GroupedProcessor | None:
    """`processor` as a GroupedProcessor, or None when it is not one (or is None)."""
    if processor is None:
        return None
    kind = type(processor)
    grouped = _GROUPED_CLASSES.get(kind)
    if grouped is None:
        grouped = _GROUPED_CLASSES[kind] = isinstance(processor, GroupedProcessor)
    return cast(GroupedProcessor, processor) if grouped else None
