"""Hand-built WindowReports for unit tests of the window observers (metrics, drift, tenants)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from capabilities.plan import BatchPlan, CapabilityStep, PlannedRequest
from capabilities.results import CapabilityResult
from server.execution.executor import WindowOutcome
from server.execution.observers import WindowReport


def labelled(capability: str, label: str) -> CapabilityResult:
    return CapabilityResult(capability, "v1", label, 0.9, {label: 0.9})


def multilabel(capability: str, *labels: str) -> CapabilityResult:
    top = labels[0] if labels else None
    return CapabilityResult(capability, "v1", top, 1.0, {}, labels=tuple(labels))


def scored(capability: str, score: float) -> CapabilityResult:
    return CapabilityResult(capability, "v1", None, 1.0, {}, score=score)


def skipped(capability: str) -> CapabilityResult:
    return CapabilityResult.skip(capability, "v1", "condition false")


def errored(capability: str) -> CapabilityResult:
    return CapabilityResult.failed_output(capability, "v1", "output is not valid JSON")


def window_report(
    results: Mapping[str, Sequence[CapabilityResult | None]],
    seconds: Mapping[str, float] | None = None,
    tenants: Sequence[str] = ("anonymous",),
    request_texts: Sequence[int] | None = None,
    queue_waits_ms: Sequence[float] = (5.0,),
    mode: str = "batched",
) -> WindowReport:
    """A window whose capabilities each ran over the unique texts 0..n-1: result i is text i's,
    and None marks a text the capability failed on. One planned request per tenant, splitting
    the texts as `request_texts` says (default: all texts to the first)."""
    count = max(len(per_text) for per_text in results.values())
    names = tuple(results)
    sizes = list(request_texts) if request_texts is not None else [count]
    requests, start = [], 0
    for size in sizes:
        ids = tuple(range(start, start + size))
        requests.append(PlannedRequest(ids, names, names, names))
        start += size
    steps = tuple(
        CapabilityStep(name, (), tuple(range(len(per_text)))) for name, per_text in results.items()
    )
    outcome = WindowOutcome(
        results={
            name: {i: r for i, r in enumerate(per_text) if r is not None}
            for name, per_text in results.items()
        },
        failures={
            name: {i: "RuntimeError" for i, r in enumerate(per_text) if r is None}
            for name, per_text in results.items()
        },
        seconds=dict(seconds or {}),
    )
    plan = BatchPlan(tuple(f"text {i}" for i in range(count)), steps, tuple(requests))
    return WindowReport(plan, outcome, mode, list(queue_waits_ms), list(tenants), list(sizes))
