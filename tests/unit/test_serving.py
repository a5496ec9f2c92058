"""The server process (uvicorn with the draining shutdown) on a fake pool: SIGTERM lets the
requests in flight finish within the grace, cuts the rest with 503 shutting_down, and exits 0;
a failed start-up exits 1."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.integration.live_server import LiveServer, free_port

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def fake_server(tmp_path: Path, delay: float, grace: float, *extra: str) -> Iterator[LiveServer]:
    port = free_port()
    cmd = [sys.executable, "-m", "tests.unit.fake_server", str(port), str(delay), str(grace)]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([*cmd, *extra], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    live = LiveServer(f"http://127.0.0.1:{port}", log_path, process, tmp_path)
    try:
        yield live
    finally:
        live.stop(signal.SIGKILL)


def _classify(url: str) -> httpx.Response:
    body = {"texts": ["a"], "capabilities": ["sentiment"]}
    return httpx.post(f"{url}/classify", json=body, timeout=60)


def test_sigterm_finishes_short_work_and_exits_0(tmp_path: Path) -> None:
    with fake_server(tmp_path, 1.0, 10.0) as live:
        live.wait_ready(30, "/health/ready")
        url, process = live.url, live.process
        with ThreadPoolExecutor(2) as pool:
            running = [pool.submit(_classify, url) for _ in range(2)]
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            responses = [r.result() for r in running]
        assert [r.status_code for r in responses] == [200, 200]
        assert process.wait(timeout=20) == 0


def test_sigterm_cuts_long_work_after_the_grace_with_503(tmp_path: Path) -> None:
    with fake_server(tmp_path, 30.0, 1.0) as live:
        live.wait_ready(30, "/health/ready")
        url, process = live.url, live.process
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(_classify, url)
            time.sleep(0.3)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            response = running.result()
            assert process.wait(timeout=20) == 0
        assert time.monotonic() - signalled < 10  # the grace, not the 30 s of work
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "shutting_down"


def test_a_failed_start_up_exits_1_with_the_reason_logged(tmp_path: Path) -> None:
    with fake_server(tmp_path, 0.0, 1.0, "fail") as live:
        assert live.process.wait(timeout=30) == 1
        assert "start-up failed: FileNotFoundError" in live.log()
