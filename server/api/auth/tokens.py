"""Bearer JWTs: HS256 with a secret from the environment, or RS256 with keys from a JWKS file.

Expiry is always required and checked; the audience and issuer when configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from schemas.config import JwtConfig
from server.api.auth.keys import AuthConfigError
from server.api.auth.principal import Principal

MAX_TENANT_CHARS = 64


class InvalidTokenError(ValueError):
    """A token that does not prove who the caller is; the message never holds the token."""


def _load_jwks(config: JwtConfig) -> jwt.PyJWKSet:
    if config.jwks_file is None:
        raise AuthConfigError("auth.jwt: RS256 needs jwks_file (a JWKS JSON file of public keys)")
    try:
        return jwt.PyJWKSet.from_json(config.jwks_file.read_text())
    except OSError as exc:
        raise AuthConfigError(f"auth.jwt.jwks_file: cannot read it ({exc.strerror})") from None
    except jwt.PyJWTError as exc:
        raise AuthConfigError(f"auth.jwt.jwks_file: not a usable JWKS ({exc})") from None


class JwtVerifier:
    def __init__(self, config: JwtConfig, environ: Mapping[str, str]) -> None:
        self._config = config
        self._secret: str | None = None
        self._jwks: jwt.PyJWKSet | None = None
        if config.algorithm == "HS256":
            self._secret = environ.get(config.secret_env) or None
            if self._secret is None:
                raise AuthConfigError(
                    f"auth.jwt: HS256 needs its secret in the environment variable "
                    f"${config.secret_env}, which is unset or empty"
                )
        else:
            self._jwks = _load_jwks(config)

    def _key(self, token: str) -> Any:
        if self._secret is not None:
            return self._secret
        assert self._jwks is not None
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str):
            raise InvalidTokenError("the token's header names no key (kid)")
        try:
            return self._jwks[kid].key
        except KeyError:
            raise InvalidTokenError("the token's key (kid) is not in the JWKS file") from None

    def verify(self, token: str) -> Principal:
        config = self._config
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key(token),
                algorithms=[config.algorithm],
                audience=config.audience,
                issuer=config.issuer,
                options={"require": ["exp"], "verify_aud": config.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidTokenError("the token's audience is not this server") from None
        except jwt.InvalidIssuerError:
            raise InvalidTokenError("the token's issuer is not the configured one") from None
        except jwt.PyJWTError:
            raise InvalidTokenError("the token is not valid") from None
        return self._principal(claims)

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        config = self._config
        tenant = claims.get(config.tenant_claim)
        if not isinstance(tenant, str) or not 0 < len(tenant) <= MAX_TENANT_CHARS:
            raise InvalidTokenError(
                f"the token's '{config.tenant_claim}' claim must be a string of 1 to "
                f"{MAX_TENANT_CHARS} characters"
            )
        raw = claims.get(config.capabilities_claim)
        if raw is not None and not (
            isinstance(raw, list) and all(isinstance(name, str) for name in raw)
        ):
            raise InvalidTokenError(
                f"the token's '{config.capabilities_claim}' claim must be a list of names"
            )
        capabilities = None if raw is None else frozenset(raw)
        admin = claims.get(config.admin_claim) is True
        return Principal(tenant, capabilities, admin, authenticated=True)
