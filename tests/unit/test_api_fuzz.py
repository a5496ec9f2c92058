"""A property-based fuzz of the HTTP API against its own OpenAPI (schemathesis, in process on
the ASGI app with a fake pool), with authentication off and on: no input may produce a 500."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capabilities.registry import CapabilityRegistry
from schemas.config import CapServeConfig, ModelConfig, RateLimitConfig
from server.api.app import create_app
from server.runtime import Runtime
from tests.unit.auth_fixtures import ADMIN_KEY, ENV, config, secured_config
from tests.unit.fakes import CLASSIC_CAPABILITIES, SHIPPED_RUNNERS, FakePool

MODELS = {name: ModelConfig(source="x", runner=runner) for name, runner in SHIPPED_RUNNERS.items()}  # type: ignore[arg-type]


def fuzz_config(base: CapServeConfig) -> CapServeConfig:
    # The fuzz's own rate: every key at rate_limits.per_key (the admin key's 3/minute dropped).
    keys = [key.model_copy(update={"rate_limit": None}) for key in base.auth.keys]
    return base.model_copy(
        update={
            "auth": base.auth.model_copy(update={"keys": keys}),
            "models": MODELS,
            "capabilities_dir": CLASSIC_CAPABILITIES,
            "rate_limits": RateLimitConfig(per_key="100000/minute"),
        }
    )


def fuzz_app(base: CapServeConfig) -> Any:
    registry = CapabilityRegistry.from_directory(CLASSIC_CAPABILITIES, SHIPPED_RUNNERS)
    with mock.patch.dict(os.environ, ENV):  # the JWT secret is read once, here
        return create_app(Runtime(fuzz_config(base), registry, FakePool()))


open_schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app(config()))
secured_schema = schemathesis.openapi.from_asgi(
    "/openapi.json", fuzz_app(secured_config()), headers={"X-API-Key": ADMIN_KEY}
)


# schemathesis ends an app's lifespan after each test (one per operation), and a runtime that
# stopped does not start again: each test gets an app of its own.
@pytest.fixture
def open_app() -> Any:
    return fuzz_app(config())


@pytest.fixture
def secured_app() -> Any:
    return fuzz_app(secured_config())


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def no_server_error(response: Any, case: Any) -> None:
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    )


@open_schema.parametrize()
@FUZZ
def test_no_input_gives_a_500_with_auth_off(case: Any, open_app: Any) -> None:
    response = case.call(app=open_app)
    no_server_error(response, case)


@secured_schema.parametrize()
@FUZZ
def test_no_input_gives_a_500_with_auth_on(case: Any, secured_app: Any) -> None:
    response = case.call(app=secured_app, headers={"X-API-Key": ADMIN_KEY})
    no_server_error(response, case)
    unauthenticated = case.call(app=secured_app)
    no_server_error(unauthenticated, case)
    if not case.formatted_path.startswith("/health"):
        # Refused (401, or earlier: 404/405/413/400), never served.
        assert unauthenticated.status_code >= 400, unauthenticated.status_code


@pytest.mark.parametrize("schema", [open_schema, secured_schema])
def test_the_fuzz_covers_every_route(schema: Any) -> None:
    paths = {operation.ok().path for operation in schema.get_all_operations()}
    assert {"/classify", "/classify/single", "/capabilities", "/admin/reload"} <= paths


CAPABILITY_NAMES = CapabilityRegistry.from_directory(CLASSIC_CAPABILITIES, SHIPPED_RUNNERS).names()
# Mostly well-formed (so requests reach the pipeline), often not (empty, too many, unknown).
texts = st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3) | st.lists(
    st.text(max_size=60), max_size=5
)
names = st.lists(st.sampled_from(CAPABILITY_NAMES), min_size=1, max_size=3) | st.lists(
    st.sampled_from(CAPABILITY_NAMES) | st.text(max_size=80), max_size=4
)
bodies = st.fixed_dictionaries(
    {"texts": texts, "capabilities": names},
    optional={"include_dependencies": st.booleans() | st.integers() | st.none()},
)


@pytest.mark.parametrize(
    ("base", "headers"), [(config(), {}), (secured_config(), {"X-API-Key": ADMIN_KEY})]
)
def test_classify_bodies_with_real_capability_names_never_give_a_500(
    base: CapServeConfig, headers: dict[str, str]
) -> None:
    """The schema fuzz rarely names a real capability; this one mostly does, so requests reach
    the pipeline (and 200s are seen, not only 422s)."""
    statuses: list[int] = []
    with TestClient(fuzz_app(base)) as client:

        @given(body=bodies, single=st.booleans())
        @FUZZ
        def run(body: dict[str, Any], single: bool) -> None:
            if single:
                one = {**body, "text": body["texts"][0] if body["texts"] else ""}
                del one["texts"]
                response = client.post("/classify/single", json=one, headers=headers)
            else:
                response = client.post("/classify", json=body, headers=headers)
            statuses.append(response.status_code)
            assert response.status_code < 500, response.text[:300]

        run()
    assert 200 in statuses and 422 in statuses
