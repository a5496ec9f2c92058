"""A request's answer, cut from its window's outcome: its results per text, an error in the place
of each text that failed, and what is missing (failed, or not finished by its deadline).

A request fails as a whole only when every one of its texts failed, or when an engine it needs is
down (then nothing of it is worth returning: retrying soon gives the whole answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from capabilities.plan import BatchPlan, PlannedRequest
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from processors.engine_status import EngineUnavailableError
from processors.overflow import TEXT_TOO_LONG
from server.validation import RequestRejectedError

ENGINE_UNAVAILABLE = EngineUnavailableError.__name__


@dataclass(frozen=True)
class WindowInfo:
    id: int
    mode: str
    requests: int
    texts: int
    unique_texts: int
    capability_executions: int
    naive_equivalent_executions: int


@dataclass(frozen=True)
class TextError:
    """Why one text of a request has no answer. Never quotes the text."""

    # "capability_failed", or "text_too_long" (longer than the model's context, and the
    # capability refuses rather than truncates).
    type: str
    # The capability that failed first (its dependents fail with it).
    capability: str
    # What the executor recorded: an exception type, or a short fixed phrase.
    reason: str

    @property
    def message(self) -> str:
        if self.type == "text_too_long":
            return (
                f"capability '{self.capability}': the text is longer than its model's context "
                "(the capability is set to on_overflow: refuse)"
            )
        return f"capability '{self.capability}' failed: {self.reason}"


@dataclass(frozen=True)
class JobResult:
    # One mapping per input text, in input order: capability name -> result. A text that failed
    # or did not finish holds what did finish.
    per_text: list[dict[str, CapabilityResult]]
    # The window that served the request; None when the cache answered it on arrival.
    window: WindowInfo | None
    # Every result came from the result cache, and no window ran for the request.
    from_cache: bool = False
    # Per text, in input order, when any text failed: its error, or None. Empty: none failed.
    errors: tuple[TextError | None, ...] = ()
    # Per text, when anything is missing: the capabilities it asked for with no result.
    missing: tuple[tuple[str, ...], ...] = ()
    # The deadline passed before every result was in.
    partial: bool = False

    @property
    def failed_texts(self) -> int:
        return sum(error is not None for error in self.errors)

    def error_of(self, position: int) -> TextError | None:
        return self.errors[position] if self.errors else None

    def missing_of(self, position: int) -> tuple[str, ...]:
        return self.missing[position] if self.missing else ()


class CapabilityFailedError(Exception):
    """A capability the request needs failed on every one of its texts (HTTP 500)."""

    def __init__(
        self, capability: str, text_index: int, reason: str, field: str | None = None
    ) -> None:
        self.capability = capability
        self.text_index = text_index
        self.reason = reason
        self.field = field or f"texts[{text_index}]"
        super().__init__(f"capability '{capability}' failed on {self.field}: {reason}")


class TextTooLongError(RequestRejectedError):
    """Every text of the request is longer than a refusing capability's model context (422)."""

    def __init__(self, capability: str, field: str) -> None:
        self.capability = capability
        super().__init__(
            field,
            f"is longer than the context of the model of capability '{capability}' "
            "(it is set to on_overflow: refuse); shorten the text",
        )


def text_error(capability: str, reason: str) -> TextError:
    kind = "text_too_long" if reason == TEXT_TOO_LONG else "capability_failed"
    return TextError(kind, capability, reason)


@dataclass(frozen=True)
class Outcomes:
    """What a window knows so far, by capability and unique text index."""

    results: Mapping[str, Mapping[int, CapabilityResult]]
    failures: Mapping[str, Mapping[int, str]]


def build_answer(
    registry: CapabilityRegistry,
    plan: BatchPlan,
    index: int,
    outcomes: Outcomes,
    info: WindowInfo | None,
    partial: bool = False,
) -> JobResult | Exception | None:
    """Request `index` of the window's answer; an exception when it fails as a whole; None when
    `partial` and nothing at all is finished."""
    planned = plan.requests[index]
    per_text: list[dict[str, CapabilityResult]] = []
    errors: list[TextError | None] = []
    for tid in planned.text_ids:
        per_text.append(
            {
                name: outcomes.results[name][tid]
                for name in planned.returned
                if tid in outcomes.results.get(name, {})
            }
        )
        errors.append(_first_error(registry, plan, planned, tid, outcomes))
    failed = [(position, e) for position, e in enumerate(errors) if e is not None]
    for _, error in failed:
        if error.reason == ENGINE_UNAVAILABLE:
            return EngineUnavailableError(registry.get(error.capability).model or "unknown")
    if failed and len(failed) == len(errors):
        position, first = failed[0]
        if all(e.type == "text_too_long" for _, e in failed):
            return TextTooLongError(first.capability, f"texts[{position}]")
        return CapabilityFailedError(first.capability, position, first.reason)
    if partial and not any(per_text):
        return None
    missing = tuple(tuple(n for n in planned.returned if n not in got) for got in per_text)
    return JobResult(
        per_text=per_text,
        window=info,
        errors=tuple(errors) if failed else (),
        missing=missing if any(missing) else (),
        partial=partial,
    )


def _first_error(
    registry: CapabilityRegistry,
    plan: BatchPlan,
    planned: PlannedRequest,
    tid: int,
    outcomes: Outcomes,
) -> TextError | None:
    """The first failure, in execution order, among what the request needed for the text."""
    needed = _needed(registry, plan, planned, tid)
    for name in planned.closure:
        reason = outcomes.failures.get(name, {}).get(tid) if name in needed else None
        if reason is not None:
            return text_error(name, reason)
    return None


def _needed(
    registry: CapabilityRegistry, plan: BatchPlan, planned: PlannedRequest, tid: int
) -> set[str]:
    """What the request needed for one text: what it returns, and the dependencies of every
    result among those that was not known."""
    needed: set[str] = set()
    stack = list(planned.returned)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            if not plan.is_known(name, tid):
                stack.extend(registry.get(name).depends_on)
    return needed
