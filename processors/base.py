"""What every processor offers: turn (capability, texts, dependency results) into results."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

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
        return cls(type(exc).__name__)


ItemOutcome = CapabilityResult | ItemFailure


@dataclass
class WindowContext:
    """State shared by the capabilities of one window, e.g. text embeddings per model."""

    _memo: dict[tuple[str, str], asyncio.Future[Any]] = field(default_factory=dict)

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
