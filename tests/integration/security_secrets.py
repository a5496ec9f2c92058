"""The API keys, JWT secret and tokens the security tests use: the log scan
(test_zz_log_scan.py) checks that no server log of the run holds any of them."""

from __future__ import annotations

import hashlib

import jwt

USER_KEY = "cs-user-7f3a9c2e41d84b6b"
ADMIN_KEY = "cs-admin-2b8e5d17c9a04f3e"
JWT_SECRET = "cs-jwt-secret-4c1d9e7a2f6b8053a1e4"
# Fixed expiries, so the tokens are the same strings in every process of the run.
_FUTURE = 4_102_444_800  # 2100-01-01
_PAST = 1_600_000_000  # 2020-09-13


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token(claims: dict[str, object], exp: int = _FUTURE, aud: str = "capserve") -> str:
    return jwt.encode({"aud": aud, "exp": exp, **claims}, JWT_SECRET, algorithm="HS256")


VALID_TOKEN = token({"sub": "jwt-tenant", "capabilities": ["sentiment"]})
EXPIRED_TOKEN = token({"sub": "jwt-tenant"}, exp=_PAST)
WRONG_AUDIENCE_TOKEN = token({"sub": "jwt-tenant"}, aud="someone-else")

# Everything no log may contain.
SECRETS = (
    USER_KEY,
    ADMIN_KEY,
    JWT_SECRET,
    VALID_TOKEN,
    EXPIRED_TOKEN,
    WRONG_AUDIENCE_TOKEN,
)
