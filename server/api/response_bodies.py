"""The response bodies of a finished job: a JobResult's texts, results and window as the API's
pydantic models. The routes use them, and so does `capserve classify` in process, whose result
rows must have the shape of the HTTP ones."""

from __future__ import annotations

from capabilities.results import CapabilityResult
from schemas.api import CapabilityResultBody, TextErrorBody, TextResultBody, WindowBody
from server.execution.answer import JobResult


def result_body(result: CapabilityResult) -> CapabilityResultBody:
    return CapabilityResultBody(
        label=result.label,
        confidence=round(result.confidence, 6),
        probabilities={k: round(v, 6) for k, v in result.probabilities.items()},
        version=result.version,
        score=None if result.score is None else round(result.score, 6),
        labels=None if result.labels is None else list(result.labels),
        fields=None if result.fields is None else dict(result.fields),
        path=None if result.path is None else list(result.path),
        skipped=result.skipped is not None,
        reason=result.skipped,
        error=result.error,
        details=dict(result.details),
    )


def window_body(job: JobResult) -> WindowBody | None:
    return None if job.window is None else WindowBody(**vars(job.window))


def text_body(job: JobResult, index: int) -> TextResultBody:
    error = job.error_of(index)
    return TextResultBody(
        index=index,
        results={n: result_body(r) for n, r in job.per_text[index].items()},
        error=None
        if error is None
        else TextErrorBody(type=error.type, capability=error.capability, message=error.message),
        missing=list(job.missing_of(index)),
    )
