"""API keys, JWTs and the start-up checks, without HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from schemas.config import AuthConfig, JwtConfig, RateLimitConfig, ServerConfig
from server.api.auth.authenticator import (
    Authenticator,
    InvalidCredentialsError,
    check_auth_config,
    is_loopback,
)
from server.api.auth.keys import AuthConfigError, KeyStore, hash_key, load_keys
from server.api.auth.principal import Principal
from tests.unit.auth_fixtures import (
    ADMIN_KEY,
    ENV,
    USER_KEY,
    config,
    hs256_token,
    keys,
    rs256_token,
    rsa_jwks,
    secured_config,
)


def authenticate(auth: Authenticator, **headers: str) -> Principal | None:
    return auth.authenticate(Headers(headers={k.replace("_", "-"): v for k, v in headers.items()}))


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator.from_config(secured_config(), ENV)


def test_hash_key_is_the_hex_sha256():
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_key_resolves_to_its_tenant_capabilities_admin_and_rate():
    store = KeyStore(keys())
    user = store.find(USER_KEY)
    admin = store.find(ADMIN_KEY)
    assert user == Principal("tenant-a", frozenset({"sentiment"}), False, True, None)
    assert admin == Principal("ops", None, True, True, "3/minute")
    assert store.find("not-a-key") is None
    assert store.find(USER_KEY + "x") is None


def test_keys_come_from_the_config_and_the_environment_variable():
    extra = [{"name": "from-env", "sha256": hash_key("k3"), "admin": True}]
    loaded = load_keys(AuthConfig(keys=keys()), {"CAPSERVE_API_KEYS": json.dumps(extra)})
    assert [key.name for key in loaded] == ["tenant-a", "ops", "from-env"]
    assert KeyStore(loaded).find("k3") == Principal("from-env", None, True, True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "JSON list"),
        ('[{"name": "x", "sha256": "plain-text-key"}]', "JSON list"),
        (json.dumps([{"name": "tenant-a", "sha256": "0" * 64}]), "repeated: tenant-a"),
    ],
)
def test_bad_keys_in_the_environment_refuse_to_start(raw: str, message: str):
    with pytest.raises(AuthConfigError, match=message) as caught:
        load_keys(AuthConfig(keys=keys()), {"CAPSERVE_API_KEYS": raw})
    assert "plain-text-key" not in str(caught.value)


def test_bearer_and_x_api_key_both_work(auth: Authenticator):
    by_bearer = authenticate(auth, authorization=f"Bearer {USER_KEY}")
    by_header = authenticate(auth, x_api_key=USER_KEY)
    assert by_bearer is not None and by_bearer.tenant == "tenant-a"
    assert by_bearer == by_header
    assert authenticate(auth) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer wrong"},
        {"authorization": f"Basic {USER_KEY}"},
        {"authorization": "Bearer "},
        {"x_api_key": " "},
        {"authorization": "Bearer a.b.c"},
    ],
)
def test_bad_credentials_are_refused_without_echoing_them(
    auth: Authenticator, headers: dict[str, str]
):
    with pytest.raises(InvalidCredentialsError) as caught:
        authenticate(auth, **headers)
    assert USER_KEY not in str(caught.value) and "wrong" not in str(caught.value)


def test_hs256_token_gives_tenant_capabilities_and_admin(auth: Authenticator):
    token = hs256_token({"sub": "svc", "capabilities": ["pii"], "admin": True})
    assert authenticate(auth, authorization=f"Bearer {token}") == Principal(
        "svc", frozenset({"pii"}), True, True
    )
    plain = authenticate(auth, authorization=f"Bearer {hs256_token({'sub': 'svc'})}")
    assert plain == Principal("svc", None, False, True)


@pytest.mark.parametrize(
    ("claims", "secret", "message"),
    [
        ({"sub": "svc", "exp": int(time.time()) - 10}, None, "expired"),
        ({"sub": "svc", "aud": "someone-else"}, None, "audience"),
        ({"sub": "svc"}, "another-secret-that-is-long-enough-too", "not valid"),
        ({"capabilities": ["x"]}, None, "'sub' claim"),
        ({"sub": "svc", "capabilities": "sentiment"}, None, "'capabilities' claim"),
        ({"sub": "x" * 65}, None, "'sub' claim"),
    ],
)
def test_bad_tokens_are_refused(
    auth: Authenticator, claims: dict[str, object], secret: str | None, message: str
):
    token = hs256_token(claims, secret) if secret else hs256_token(claims)
    with pytest.raises(InvalidCredentialsError, match=message):
        authenticate(auth, authorization=f"Bearer {token}")


def test_a_token_without_expiry_is_refused(auth: Authenticator):
    import jwt

    token = jwt.encode({"sub": "svc", "aud": "capserve"}, ENV["CAPSERVE_JWT_SECRET"])
    with pytest.raises(InvalidCredentialsError, match="not valid"):
        authenticate(auth, authorization=f"Bearer {token}")


def test_the_issuer_is_checked_when_configured():
    jwt_config = JwtConfig(issuer="https://issuer.example")
    auth = Authenticator.from_config(config(AuthConfig(jwt=jwt_config)), ENV)
    good = hs256_token({"sub": "svc", "iss": "https://issuer.example"})
    assert authenticate(auth, authorization=f"Bearer {good}") is not None
    with pytest.raises(InvalidCredentialsError, match="issuer"):
        authenticate(auth, authorization=f"Bearer {hs256_token({'sub': 's', 'iss': 'other'})}")


def test_rs256_tokens_are_checked_against_the_jwks_key_named_by_kid(tmp_path: Path):
    private, jwks = rsa_jwks(tmp_path)
    jwt_config = JwtConfig(algorithm="RS256", jwks_file=jwks)
    auth = Authenticator.from_config(config(AuthConfig(jwt=jwt_config)), {})
    token = rs256_token(private, {"sub": "rsa-client"})
    assert authenticate(auth, authorization=f"Bearer {token}") == Principal(
        "rsa-client", None, False, True
    )
    with pytest.raises(InvalidCredentialsError, match="kid"):
        authenticate(auth, authorization=f"Bearer {rs256_token(private, {'sub': 'x'}, 'k9')}")
    (tmp_path / "other").mkdir()
    other, _ = rsa_jwks(tmp_path / "other")  # another key under the same kid
    with pytest.raises(InvalidCredentialsError, match="not valid"):
        authenticate(auth, authorization=f"Bearer {rs256_token(other, {'sub': 'x'})}")
    hs = hs256_token({"sub": "x"})  # HS256 is not accepted by an RS256 server
    with pytest.raises(InvalidCredentialsError):
        authenticate(auth, authorization=f"Bearer {hs}")


def test_unusable_jwt_settings_refuse_to_start(tmp_path: Path):
    with pytest.raises(AuthConfigError, match=r"\$CAPSERVE_JWT_SECRET"):
        Authenticator.from_config(config(AuthConfig(jwt=JwtConfig())), {})
    with pytest.raises(AuthConfigError, match="jwks_file"):
        Authenticator.from_config(config(AuthConfig(jwt=JwtConfig(algorithm="RS256"))), {})
    missing = JwtConfig(algorithm="RS256", jwks_file=tmp_path / "none.json")
    with pytest.raises(AuthConfigError, match="cannot read"):
        Authenticator.from_config(config(AuthConfig(jwt=missing)), {})


def test_auth_is_on_only_when_something_is_configured():
    assert not Authenticator.from_config(config(), {}).enabled
    assert Authenticator.from_config(config(AuthConfig(keys=keys())), {}).enabled
    assert not Authenticator.from_config(config(AuthConfig(mode="none", keys=keys())), {}).enabled
    from_env = json.dumps([{"name": "e", "sha256": hash_key("e")}])
    assert Authenticator.from_config(config(), {"CAPSERVE_API_KEYS": from_env}).enabled


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2", "[::1]"])
def test_loopback_hosts(host: str):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com", ""])
def test_other_hosts(host: str):
    assert not is_loopback(host)


def test_an_open_server_refuses_a_non_loopback_address():
    public = ServerConfig(host="0.0.0.0")
    with pytest.raises(AuthConfigError, match="auth: none"):
        check_auth_config(config(server=public), {})
    assert not check_auth_config(config(AuthConfig(mode="none"), server=public), {}).enabled
    assert check_auth_config(config(AuthConfig(keys=keys()), server=public), {}).enabled
    assert not check_auth_config(config(), {}).enabled  # loopback: open


def test_bad_rates_refuse_to_start():
    with pytest.raises(AuthConfigError, match=r"rate_limits\.per_key"):
        check_auth_config(config(rate_limits=RateLimitConfig(per_key="lots")), {})
    bad_key = [*keys()[:1], keys()[1].model_copy(update={"rate_limit": "often"})]
    with pytest.raises(AuthConfigError, match=r"auth.keys\['ops'\].rate_limit"):
        check_auth_config(config(AuthConfig(keys=bad_key)), {})
