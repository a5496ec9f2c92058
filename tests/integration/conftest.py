"""Starts `capserve serve` once per test session: real vLLM engines, default models, HTTP.

The session server runs the shipped pack (`configs/capabilities/`) plus the test-only
capabilities of `tests/integration/capabilities/` (one or more of every kind), from a copy in a
temporary folder that tests may change and hot-reload. Test-only models (e.g. a tiny sequence
classifier built on the spot) come from `tests/integration/session_models.py`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.session_models import extra_models
from tests.redis_server import RedisServer, running_redis

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 900
TEST_CAPABILITIES = Path(__file__).parent / "capabilities"


@dataclass
class LiveServer:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    # The folder the server reads its capabilities from (a copy: tests may change it).
    capabilities_dir: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    capabilities = folder / "capabilities"
    shutil.copytree(REPO / "configs/capabilities", capabilities)
    for path in sorted(TEST_CAPABILITIES.glob("*")):
        if path.is_file():
            shutil.copy(path, capabilities / path.name)
    config = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    config["capabilities_dir"] = str(capabilities)
    config["models"].update(extra_models(folder))
    path = folder / "capserve.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, redis_l2: RedisServer) -> Iterator[LiveServer]:
    port = _free_port()
    folder = tmp_path_factory.mktemp("server")
    log_path = folder / "server.log"
    config_path = session_config(folder)
    env = dict(
        os.environ,
        CAPSERVE__BATCHING__ALLOW_MODE_HEADER="true",
        CAPSERVE__CACHE__REDIS_URL=redis_l2.url,
        CAPSERVE__CACHE__REDIS_RETRY_AFTER_S="1",
        CAPSERVE_REDIS_PASSWORD=redis_l2.password,
        CAPSERVE_CACHE_SECRET="integration-test-secret",
    )
    capserve = Path(sys.executable).parent / "capserve"  # the installed console script
    cmd = [
        str(capserve),
        "serve",
        "--config",
        str(config_path),
        "--port",
        str(port),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    live = LiveServer(
        f"http://127.0.0.1:{port}", log_path, process, config_path.parent / "capabilities"
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"capserve exited with {process.returncode}:\n{live.log()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"capserve not ready after {STARTUP_TIMEOUT_S} s:\n{live.log()[-4000:]}"
                )
            try:
                if httpx.get(f"{live.url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        yield live
    finally:
        process.terminate()
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=300) as c:
        yield c
