"""What both clients send and how they read the answer: credentials, the classify body, and
the typed response or the exception for an error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from client.errors import BadRequest, CapserveError, error_from_response
from schemas.api import ClassifyRequest, Priority

Model = TypeVar("Model", bound=BaseModel)

DEFAULT_TIMEOUT_S = 300.0


def auth_headers(api_key: str | None, token: str | None) -> dict[str, str]:
    """An API key goes in X-API-Key, a JWT as a bearer token; at most one of them."""
    if api_key is not None and token is not None:
        raise ValueError("give api_key or token, not both")
    credential = api_key if api_key is not None else token
    if credential is not None and (
        not credential or any(c.isspace() or not c.isprintable() for c in credential)
    ):
        # Said without the value: a key pasted with a newline must not reach a log.
        raise ValueError("the credential is empty or holds whitespace or control characters")
    if api_key is not None:
        return {"X-API-Key": api_key}
    if token is not None:
        return {"Authorization": f"Bearer {token}"}
    return {}


def classify_body(
    texts: Sequence[str],
    capabilities: Sequence[str],
    priority: Priority,
    timeout_ms: int | None,
    include_dependencies: bool,
) -> dict[str, Any]:
    """The /classify body, checked against the server's own request model before it is sent
    (BadRequest, as the server would answer, when it is not valid)."""
    try:
        request = ClassifyRequest(
            texts=list(texts),
            capabilities=list(capabilities),
            priority=priority,
            timeout_ms=timeout_ms,
            include_dependencies=include_dependencies,
        )
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"][:1]) for e in exc.errors()})
        raise BadRequest(
            f"invalid request: {', '.join(fields)}", None, "validation_error"
        ) from None
    return request.model_dump(exclude_none=True)


def parse(response: httpx.Response, model: type[Model]) -> Model:
    """The body as `model`, or the exception for a non-2xx answer."""
    if not response.is_success:
        raise error_from_response(response)
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise CapserveError(
            f"the answer is not a {model.__name__}: {exc.error_count()} error(s)",
            response.status_code,
            "invalid_response",
        ) from None
