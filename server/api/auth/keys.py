"""API keys, known by their SHA-256 hashes only, from the config and an environment variable."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from pydantic import TypeAdapter, ValidationError

from schemas.config import ApiKeyConfig, AuthConfig
from server.api.auth.principal import Principal

_KEY_LIST = TypeAdapter(list[ApiKeyConfig])


class AuthConfigError(ValueError):
    """The auth configuration cannot be used (the server refuses to start)."""


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key, as `auth.keys[].sha256` holds it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_keys(auth: AuthConfig, environ: Mapping[str, str]) -> list[ApiKeyConfig]:
    """The configured keys plus those of the JSON list in the `auth.keys_env` variable."""
    keys = list(auth.keys)
    raw = environ.get(auth.keys_env, "").strip()
    if raw:
        try:
            keys.extend(_KEY_LIST.validate_python(json.loads(raw)))
        except (json.JSONDecodeError, ValidationError) as exc:
            # The error names the variable and the problem's position, never its value.
            problem = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.errors()[0]["msg"]
            raise AuthConfigError(
                f"${auth.keys_env} must be a JSON list of keys "
                "({name, sha256, capabilities?, admin?, rate_limit?}): " + problem
            ) from None
    names = [key.name for key in keys]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise AuthConfigError(f"API key names must be unique; repeated: {', '.join(duplicates)}")
    return keys


class KeyStore:
    """Finds the key a caller presented by comparing its hash with every configured hash in
    constant time (no early exit: the time does not tell which key, or how much, matched)."""

    def __init__(self, keys: list[ApiKeyConfig]) -> None:
        self._keys = [(bytes.fromhex(key.sha256), key) for key in keys]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def find(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: ApiKeyConfig | None = None
        for stored, key in self._keys:
            if hmac.compare_digest(stored, digest):
                found = key
        if found is None:
            return None
        allowed = None if found.capabilities is None else frozenset(found.capabilities)
        return Principal(found.name, allowed, found.admin, True, found.rate_limit)
