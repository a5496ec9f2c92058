"""Starts `capserve serve` once per test session: real vLLM engines, default models, HTTP.

The session server runs the shipped pack (`configs/capabilities/`) plus the test-only
capabilities of `tests/integration/capabilities/` (one or more of every kind), from a copy in a
temporary folder that tests may change and hot-reload. Test-only models (e.g. a tiny sequence
classifier built on the spot) come from `tests/integration/session_models.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.live_server import LiveServer, start_server, write_config
from tests.integration.secured_server import secured_config
from tests.integration.security_secrets import JWT_SECRET
from tests.integration.session_models import extra_models
from tests.redis_server import RedisServer, running_redis


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_l2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The live server's result cache L2: a real redis-server with a password."""
    with running_redis(tmp_path_factory.mktemp("redis")) as redis:
        yield redis


def session_config(folder: Path) -> Path:
    """configs/default.yaml, reading capabilities from a copy of the shipped pack plus the
    test-only ones, with the test-only models added."""
    return write_config(folder, extra_models=extra_models(folder))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, redis_l2: RedisServer) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("server")
    env = {
        "CAPSERVE__BATCHING__ALLOW_MODE_HEADER": "true",
        "CAPSERVE__CACHE__REDIS_URL": redis_l2.url,
        "CAPSERVE__CACHE__REDIS_RETRY_AFTER_S": "1",
        "CAPSERVE_REDIS_PASSWORD": redis_l2.password,
        "CAPSERVE_CACHE_SECRET": "integration-test-secret",
    }
    live = start_server(folder, session_config(folder), env)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with auth on (tests/integration/secured_server.py), for the module that asks
    for it (test_security.py: one module, so that it does not stay up through the others)."""
    folder = tmp_path_factory.mktemp("security")
    live = start_server(folder, secured_config(folder), {"CAPSERVE_JWT_SECRET": JWT_SECRET})
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=300) as c:
        yield c
