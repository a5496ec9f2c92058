"""The client's exceptions, one per kind of failure, each carrying the server's error body:
`{"error": {"type", "message", "details": [{field, message}]}}` (server/api/errors.py)."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from schemas.api import ErrorDetail, ErrorResponse


class CapserveError(Exception):
    """A request that failed: `status` (None when no answer came), the server's error `type`
    and `message`, and its `details`."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        type: str = "error",
        details: list[ErrorDetail] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.message = message
        self.details = details or []
        self.retry_after_s = retry_after_s
        where = f"HTTP {status} " if status is not None else ""
        super().__init__(f"{where}{type}: {message}")


class BadRequest(CapserveError):
    """400, 413 or 422: the request itself is wrong (a field, an unknown capability, too big)."""


class AuthError(CapserveError):
    """401 (no or a bad credential) or 403 (the credential may not do this)."""


class RateLimited(CapserveError):
    """429: over the credential's rate; `retry_after_s` says when to come back."""


class Unavailable(CapserveError):
    """503: at capacity, an engine down, or shutting down; `retry_after_s` when the server
    gave one."""


class TimedOut(CapserveError):
    """504: the deadline passed before any result was finished."""


class ServerError(CapserveError):
    """Another 5xx (e.g. capability_failed on every text, internal_error)."""


class ConnectionFailed(CapserveError):
    """No answer at all: connection refused or reset, or the read timed out."""


def _by_status(status: int) -> type[CapserveError]:
    if status in (401, 403):
        return AuthError
    if status == 429:
        return RateLimited
    if status == 503:
        return Unavailable
    if status == 504:
        return TimedOut
    if status >= 500:
        return ServerError
    if status >= 400:
        return BadRequest
    return CapserveError


def retry_after_of(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the delta-seconds form; an HTTP date is ignored)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> CapserveError:
    """The exception for a non-2xx answer, with the server's error body when it sent one."""
    try:
        body = ErrorResponse.model_validate_json(response.content).error
        kind, message, details = body.type, body.message, body.details
    except ValidationError:
        kind, message, details = "http_error", f"HTTP {response.status_code}", []
    cls = _by_status(response.status_code)
    return cls(message, response.status_code, kind, details, retry_after_of(response))


# Transport errors that no retry can mend: a bad URL, or a request httpx refuses to send.
_HOPELESS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)


def error_from_transport(exc: httpx.TransportError | httpx.InvalidURL) -> CapserveError:
    """The exception for a request that got no answer. Its message names the error's class
    only: httpx's own text may quote the request's headers (its credential)."""
    if isinstance(exc, _HOPELESS):
        return BadRequest(
            f"the request could not be sent ({type(exc).__name__}): check the URL",
            None,
            "request_not_sent",
        )
    return ConnectionFailed(
        f"no answer from the server ({type(exc).__name__})", type="connection_failed"
    )
