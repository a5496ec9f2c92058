"""Keys, tokens and configs of the auth unit tests (and the API fuzz with auth on)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from schemas.config import (
    ApiKeyConfig,
    AuthConfig,
    BatchingConfig,
    CapServeConfig,
    JwtConfig,
    LimitsConfig,
    ModelConfig,
    RateLimitConfig,
)
from server.api.auth.keys import hash_key

USER_KEY = "user-key-0123456789"
ADMIN_KEY = "admin-key-9876543210"
JWT_SECRET = "unit-test-jwt-secret-that-is-long-enough"
ENV = {"CAPSERVE_JWT_SECRET": JWT_SECRET}


def keys() -> list[ApiKeyConfig]:
    return [
        ApiKeyConfig(name="tenant-a", sha256=hash_key(USER_KEY), capabilities=["sentiment"]),
        ApiKeyConfig(name="ops", sha256=hash_key(ADMIN_KEY), admin=True, rate_limit="3/minute"),
    ]


def config(auth: AuthConfig | None = None, **sections: Any) -> CapServeConfig:
    return CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        batching=BatchingConfig(window_ms=10),
        limits=sections.pop(
            "limits", LimitsConfig(max_texts_per_request=3, max_text_chars=50, max_body_bytes=2048)
        ),
        rate_limits=sections.pop("rate_limits", RateLimitConfig(per_key="1000/minute")),
        auth=auth or AuthConfig(),
        **sections,
    )


def secured_config(**sections: Any) -> CapServeConfig:
    return config(AuthConfig(keys=keys(), jwt=JwtConfig()), **sections)


def hs256_token(claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
    return jwt.encode({"aud": "capserve", "exp": int(time.time()) + 600, **claims}, secret)


def rsa_jwks(folder: Path, kid: str = "key-1") -> tuple[Any, Path]:
    """A new RSA private key, and a JWKS file holding its public half under `kid`."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    path = folder / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}))
    return private, path


def rs256_token(private: Any, claims: dict[str, Any], kid: str = "key-1") -> str:
    payload = {"aud": "capserve", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, private, algorithm="RS256", headers={"kid": kid})
