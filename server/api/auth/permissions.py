"""What a caller may do: the capabilities it may ask for and get, and the admin endpoints."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from capabilities.registry import CapabilityRegistry, shown_names
from server.api.auth.principal import Principal, principal_of
from server.api.errors import error_response


class ForbiddenError(PermissionError):
    """The caller is known but may not do this (HTTP 403)."""


def authorize_capabilities(
    principal: Principal,
    registry: CapabilityRegistry,
    requested: Sequence[str],
    include_dependencies: bool,
) -> None:
    """Raises ForbiddenError when the caller may not use a requested capability, or (with
    include_dependencies) one of the dependencies that would be returned to it."""
    if principal.capabilities is None:
        return
    denied = sorted({name for name in requested if not principal.may_use(name)})
    if not denied and include_dependencies:
        denied = [name for name in registry.resolve(requested) if not principal.may_use(name)]
        if denied:
            raise ForbiddenError(
                f"this caller may not receive the dependencies {shown_names(denied)}; "
                "ask without include_dependencies"
            )
    if denied:
        raise ForbiddenError(f"this caller may not use the capabilities {shown_names(denied)}")


async def require_admin(request: Request) -> None:
    """A dependency of the /admin router: only an admin caller (any caller with auth off)."""
    if not principal_of(request).admin:
        raise ForbiddenError("the admin endpoints need an admin API key or token")


def install_forbidden_handler(app: FastAPI) -> None:
    @app.exception_handler(ForbiddenError)
    async def _forbidden(_request: Request, exc: ForbiddenError) -> JSONResponse:
        return error_response(403, "forbidden", str(exc))
