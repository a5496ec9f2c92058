"""Resolves a request's credentials (`Authorization: Bearer <key or JWT>` or `X-API-Key`) to a
Principal, and decides at start-up whether authentication is on."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping

import limits
from starlette.datastructures import Headers

from schemas.config import CapServeConfig
from server.api.auth.keys import AuthConfigError, KeyStore, load_keys
from server.api.auth.principal import Principal
from server.api.auth.tokens import InvalidTokenError, JwtVerifier


class InvalidCredentialsError(ValueError):
    """Credentials were sent but prove nothing (HTTP 401); the message never holds them."""


class Authenticator:
    def __init__(self, keys: KeyStore, tokens: JwtVerifier | None, enabled: bool) -> None:
        self._keys = keys
        self._tokens = tokens
        # False: every request is open (auth: none, or auto with nothing configured).
        self.enabled = enabled

    @classmethod
    def from_config(cls, config: CapServeConfig, environ: Mapping[str, str]) -> Authenticator:
        """Raises AuthConfigError for keys or JWT settings that cannot be used."""
        auth = config.auth
        if auth.mode == "none":
            return cls(KeyStore([]), None, enabled=False)
        keys = load_keys(auth, environ)
        for key in keys:
            if key.rate_limit is not None:
                _check_rate(key.rate_limit, f"auth.keys['{key.name}'].rate_limit")
        tokens = None if auth.jwt is None else JwtVerifier(auth.jwt, environ)
        return cls(KeyStore(keys), tokens, enabled=bool(keys) or tokens is not None)

    def authenticate(self, headers: Headers, basic: bool = False) -> Principal | None:
        """The caller the headers prove; None when they carry no credentials at all. With
        `basic`, also `Authorization: Basic` whose password is the key or JWT (any user name):
        what a browser sends after its login prompt."""
        presented = _credential(headers, basic)
        if presented is None:
            return None
        principal = self._keys.find(presented)
        if principal is not None:
            return principal
        if self._tokens is not None and presented.count(".") == 2:
            try:
                return self._tokens.verify(presented)
            except InvalidTokenError as exc:
                raise InvalidCredentialsError(str(exc)) from None
        raise InvalidCredentialsError("the API key is not valid")


def _credential(headers: Headers, basic: bool = False) -> str | None:
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if basic and scheme.lower() == "basic":
            return _basic_password(value.strip())
        if scheme.lower() != "bearer" or not value.strip():
            expected = "'Bearer <key or JWT>'" + (" or 'Basic'" if basic else "")
            raise InvalidCredentialsError(f"the Authorization header must be {expected}")
        return value.strip()
    api_key = headers.get("x-api-key")
    if api_key is not None:
        if not api_key.strip():
            raise InvalidCredentialsError("the X-API-Key header is empty")
        return api_key.strip()
    return None


def _basic_password(value: str) -> str:
    """The password of HTTP Basic credentials (base64 of 'user:password')."""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidCredentialsError(
            "the Basic credentials are not base64 of 'user:key'"
        ) from None
    _user, colon, password = decoded.partition(":")
    if not colon or not password.strip():
        raise InvalidCredentialsError("the Basic credentials need the API key as the password")
    return password.strip()


def _check_rate(rate: str, where: str) -> None:
    try:
        limits.parse(rate)
    except ValueError:
        raise AuthConfigError(f"{where}: '{rate}' is not a rate such as '100/minute'") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_config(config: CapServeConfig, environ: Mapping[str, str]) -> Authenticator:
    """The server's authenticator, or AuthConfigError when the server must not start: unusable
    keys, JWT settings or rate limits, or an open server on a non-loopback address."""
    authenticator = Authenticator.from_config(config, environ)
    for rate, where in (
        (config.rate_limits.per_key, "rate_limits.per_key"),
        (config.rate_limits.anonymous, "rate_limits.anonymous"),
    ):
        if rate is not None:
            _check_rate(rate, where)
    host = config.server.host
    if config.auth.mode == "auto" and not authenticator.enabled and not is_loopback(host):
        raise AuthConfigError(
            f"refusing to serve on {host} without authentication: configure API keys "
            f"(auth.keys or ${config.auth.keys_env}; `capserve hash-key` prints a key's hash) "
            "or auth.jwt, or set `auth: none` to run open on purpose"
        )
    return authenticator
