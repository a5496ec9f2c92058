"""The resolved caller of a request, on `request.state.principal` for every request."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import Scope

ANONYMOUS_TENANT = "anonymous"


@dataclass(frozen=True)
class Principal:
    """A caller: its tenant, the capabilities it may ask for (None: all), and admin rights."""

    tenant: str
    capabilities: frozenset[str] | None = None
    admin: bool = False
    # True when the caller proved who it is (a key or a token), False for an anonymous caller.
    authenticated: bool = False
    # The caller's own request rate (its key's `rate_limit`); None: rate_limits.per_key.
    rate_limit: str | None = None

    def may_use(self, capability: str) -> bool:
        return self.capabilities is None or capability in self.capabilities


# Auth off: everything is open, /admin included, as before authentication existed.
OPEN = Principal(ANONYMOUS_TENANT, None, admin=True)
# Auth on, no credentials, on a path that needs none (/health, /metrics).
ANONYMOUS = Principal(ANONYMOUS_TENANT, None, admin=False)


def set_principal(scope: Scope, principal: Principal) -> None:
    scope.setdefault("state", {})["principal"] = principal


def principal_of(request: Request) -> Principal:
    """The request's caller; ANONYMOUS (no rights beyond the open paths) when none was set."""
    principal: Principal = getattr(request.state, "principal", ANONYMOUS)
    return principal
