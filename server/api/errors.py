"""Maps failures to JSON errors: `{"error": {"type", "message", "details": [{field, message}]}}`.

Messages name fields, capabilities and text indices, never the text itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from capabilities.loader import CapabilityConfigError
from capabilities.registry import UnknownCapabilityError
from processors.engine_status import EngineUnavailableError
from schemas.api import ErrorBody, ErrorDetail, ErrorResponse
from server.batching.admission import AdmissionRejectedError
from server.batching.batcher import BatcherClosedError
from server.execution.pipeline import CapabilityFailedError
from server.runtime import RequestTimeoutError
from server.validation import RequestRejectedError


def error_response(
    status: int,
    kind: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
    retry_after_s: int | None = None,
) -> JSONResponse:
    """The error body; with `retry_after_s`, the Retry-After header a client should honour."""
    body = ErrorResponse(error=ErrorBody(type=kind, message=message, details=list(details)))
    response = JSONResponse(status_code=status, content=body.model_dump())
    if retry_after_s is not None:
        response.headers["Retry-After"] = str(retry_after_s)
    return response


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "body"


def _validation_details(exc: RequestValidationError) -> list[ErrorDetail]:
    details = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            details.append(ErrorDetail(field="body", message="request body is not valid JSON"))
        else:
            # Pydantic puts the offending input in err["input"]; it is deliberately left out.
            details.append(ErrorDetail(field=_field(err.get("loc", ())), message=err["msg"]))
    return details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        message = "; ".join(f"{d.field}: {d.message}" for d in details)
        return error_response(422, "validation_error", message, details)

    @app.exception_handler(RequestRejectedError)
    async def _rejected(_request: Request, exc: RequestRejectedError) -> JSONResponse:
        detail = ErrorDetail(field=exc.field, message=str(exc))
        return error_response(422, "validation_error", str(exc), [detail])

    @app.exception_handler(UnknownCapabilityError)
    async def _unknown(_request: Request, exc: UnknownCapabilityError) -> JSONResponse:
        detail = ErrorDetail(field="capabilities", message=str(exc))
        return error_response(422, "unknown_capability", str(exc), [detail])

    @app.exception_handler(CapabilityConfigError)
    async def _invalid_set(_request: Request, exc: CapabilityConfigError) -> JSONResponse:
        # A reload found problems: the set in force stays; every problem is one detail.
        details = [ErrorDetail(message=problem) for problem in exc.problems]
        message = (
            f"the capability set has {len(exc.problems)} problem(s); "
            "the capabilities in force are unchanged"
        )
        return error_response(422, "invalid_capabilities", message, details)

    @app.exception_handler(CapabilityFailedError)
    async def _failed(_request: Request, exc: CapabilityFailedError) -> JSONResponse:
        return error_response(500, "capability_failed", str(exc))

    @app.exception_handler(RequestTimeoutError)
    async def _timeout(_request: Request, exc: RequestTimeoutError) -> JSONResponse:
        return error_response(504, "timeout", str(exc))

    @app.exception_handler(AdmissionRejectedError)
    async def _at_capacity(_request: Request, exc: AdmissionRejectedError) -> JSONResponse:
        return error_response(503, "at_capacity", str(exc), retry_after_s=exc.retry_after_s)

    @app.exception_handler(EngineUnavailableError)
    async def _engine_unavailable(request: Request, exc: EngineUnavailableError) -> JSONResponse:
        retry_after = request.app.state.runtime.config.supervisor.retry_after_s
        return error_response(503, "engine_unavailable", str(exc), retry_after_s=retry_after)

    @app.exception_handler(BatcherClosedError)
    async def _closed(_request: Request, exc: BatcherClosedError) -> JSONResponse:
        return error_response(503, "shutting_down", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")
