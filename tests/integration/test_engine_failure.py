"""Engine failure and process lifecycle, on disposable servers with real vLLM engines.

One server takes the LLM engine core's `kill -9` under load (readiness drops within 5 s,
requests get 200 or 503 engine_unavailable, never a 500 or a hang, and the supervisor restarts
the engine), then a SIGTERM with requests in flight (they finish or get 503 shutting_down, the
process exits 0 within the grace plus a margin, and no engine process survives). A second server
is killed with SIGKILL: its engine processes must die with it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]
import pytest

from tests.integration.live_server import (
    LLM_QUESTION,
    LiveServer,
    disposable_server,
)
from tests.integration.log_canary import LOG_CANARY, canary_text

pytestmark = pytest.mark.slow

GRACE_S = 8.0  # server.shutdown_grace_s of the crash server
REQUEST_TIMEOUT_S = 240.0  # a request taking longer than this counts as hung
# The engines start in config order: smollm2 (the LLM) first, then minilm.
LLM_ENGINE_INDEX = 0


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _survivors(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    left = [p for p in processes if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [p for p in left if _alive(p)]
    return left


def _engine_cores(server: LiveServer) -> list[psutil.Process]:
    """The server's vLLM engine core processes, oldest first."""
    cores = []
    for process in server.descendants():
        try:
            if "EngineCore" in process.name() or "EngineCore" in " ".join(process.cmdline()):
                cores.append(process)
        except psutil.Error:
            continue
    return sorted(cores, key=lambda p: p.create_time())


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Polls `condition` every 0.2 s; the seconds it took. Fails the test after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what} not within {timeout_s:g} s")
        time.sleep(0.2)
    return time.monotonic() - started


def _status(url: str, path: str) -> int:
    try:
        return httpx.get(f"{url}{path}", timeout=5).status_code
    except httpx.TransportError:
        return -1


@dataclass
class Outcome:
    capabilities: tuple[str, ...]
    status: int
    error_type: str | None = None
    retry_after: str | None = None
    message: str | None = None
    finished_at: float = field(default_factory=time.monotonic)


def _classify(url: str, texts: list[str], capabilities: tuple[str, ...]) -> Outcome:
    body = {"texts": texts, "capabilities": list(capabilities)}
    try:
        response = httpx.post(f"{url}/classify", json=body, timeout=REQUEST_TIMEOUT_S)
    except httpx.TimeoutException:
        return Outcome(capabilities, 0, "hung")
    except httpx.TransportError as exc:
        return Outcome(capabilities, -1, type(exc).__name__)
    error = response.json().get("error", {}) if response.status_code != 200 else {}
    return Outcome(
        capabilities,
        response.status_code,
        error.get("type"),
        response.headers.get("Retry-After"),
        error.get("message"),
    )


class Load:
    """Concurrent /classify requests (texts carrying the log canary) until stopped."""

    def __init__(self, url: str, streams: list[tuple[str, ...]], per_stream: int = 2) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._count = 0
        jobs = [caps for caps in streams for _ in range(per_stream)]
        self._pool = ThreadPoolExecutor(len(jobs))
        self._futures: list[Future[None]] = [self._pool.submit(self._run, caps) for caps in jobs]

    def _run(self, capabilities: tuple[str, ...]) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._count += 1
                n = self._count
            texts = [canary_text(f"Load text {n}.{i}: is this message fine?") for i in range(3)]
            outcome = _classify(self.url, texts, capabilities)
            with self._lock:
                self.outcomes.append(outcome)

    def ok_since(self, moment: float, capabilities: tuple[str, ...]) -> int:
        with self._lock:
            return sum(
                1
                for o in self.outcomes
                if o.status == 200 and o.finished_at > moment and o.capabilities == capabilities
            )

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=REQUEST_TIMEOUT_S + 30)
        self._pool.shutdown()
        return list(self.outcomes)


@pytest.fixture(scope="module")
def crash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("crash-server")
    overrides = {
        "server": {"shutdown_grace_s": GRACE_S},
        "supervisor": {"health_interval_s": 0.5, "restart_backoff_s": 1, "retry_after_s": 7},
        "cache": {"enabled": False},  # every request reaches the engines
    }
    with disposable_server(folder, overrides) as live:
        yield live


LLM_AND_MINILM = (LLM_QUESTION, "sentiment")
MINILM_ONLY = ("sentiment",)


def test_a_killed_engine_core_is_restarted_and_no_request_gets_a_500(
    crash_server: LiveServer,
) -> None:
    url = crash_server.url
    cores = _engine_cores(crash_server)
    assert len(cores) == 2, [p.name() for p in crash_server.descendants()]
    llm_core = cores[LLM_ENGINE_INDEX]
    llm_processes = [llm_core, *llm_core.children(recursive=True)]  # the core and its worker

    load = Load(url, [LLM_AND_MINILM, MINILM_ONLY])
    try:
        _wait_for(lambda: load.ok_since(0, LLM_AND_MINILM) >= 2, 600, "requests before the kill")
        llm_core.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

        took = _wait_for(lambda: _status(url, "/health/ready") == 503, 10, "readiness false")
        assert took < 5.0, f"readiness turned false after {took:.1f} s"
        down = httpx.get(f"{url}/health/ready", timeout=5).json()
        assert down["engines"]["smollm2"]["state"] in {"restarting", "failed"}
        assert down["engines"]["minilm"]["state"] == "ready"
        assert _status(url, "/health/live") == 200

        _wait_for(lambda: _status(url, "/health/ready") == 200, 1200, "the engine restart")
        recovered_at = time.monotonic()
        _wait_for(
            lambda: load.ok_since(recovered_at, LLM_AND_MINILM) >= 2, 600, "service after restart"
        )
    finally:
        outcomes = load.stop()

    ready = httpx.get(f"{url}/health/ready", timeout=5).json()
    assert ready["status"] == "ok"
    assert ready["engines"]["smollm2"]["restarts"] == 1
    assert ready["engines"]["smollm2"]["last_error"] == "EngineDeadError"
    assert ready["engines"]["minilm"]["restarts"] == 0
    assert not _survivors(llm_processes, 60), "the dead engine left processes behind"
    assert len(_engine_cores(crash_server)) == 2  # the new core, and minilm's

    unexpected = [
        o
        for o in outcomes
        if o.status != 200
        and not (o.status == 503 and o.error_type == "engine_unavailable" and o.retry_after)
    ]
    assert not unexpected, [(o.status, o.error_type, o.message) for o in unexpected[:5]]
    refused = [o for o in outcomes if o.status == 503 and o.finished_at > killed_at]
    assert all(o.retry_after == "7" for o in refused)
    # Requests that need only MiniLM never noticed the LLM's crash.
    assert all(o.status == 200 for o in outcomes if o.capabilities == MINILM_ONLY)

    deep = httpx.get(f"{url}/health/deep", timeout=60)
    assert deep.status_code == 200, deep.text
    assert {name for name, e in deep.json()["engines"].items() if e["ok"]} == {"smollm2", "minilm"}
    assert LOG_CANARY not in crash_server.log()


def test_sigterm_drains_in_flight_requests_and_stops_every_engine(
    crash_server: LiveServer,
) -> None:
    descendants = crash_server.descendants()
    assert _engine_cores(crash_server)
    texts = [canary_text(f"Shutdown text {i}: please check this message.") for i in range(48)]
    with ThreadPoolExecutor(3) as pool:
        requests = [
            pool.submit(_classify, crash_server.url, texts, LLM_AND_MINILM) for _ in range(3)
        ]
        time.sleep(1.5)  # in flight
        assert not any(r.done() for r in requests)
        signalled = time.monotonic()
        crash_server.process.send_signal(signal.SIGTERM)
        code = crash_server.process.wait(timeout=GRACE_S + 90)
        exited_after = time.monotonic() - signalled
        outcomes = [r.result(timeout=30) for r in requests]

    assert code == 0, crash_server.log()[-3000:]
    assert exited_after < GRACE_S + 60, f"exited {exited_after:.0f} s after SIGTERM"
    for outcome in outcomes:
        assert outcome.status == 200 or (
            outcome.status == 503 and outcome.error_type == "shutting_down"
        ), outcome
    assert not _survivors(descendants, 30), "processes outlived the server"
    assert LOG_CANARY not in crash_server.log()


@pytest.fixture(scope="module")
def doomed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder: Path = tmp_path_factory.mktemp("doomed-server")
    overrides = {"server": {"warmup": False}}
    with disposable_server(folder, overrides) as live:
        yield live


def test_no_engine_process_outlives_a_server_killed_with_sigkill(doomed_server: LiveServer) -> None:
    time.sleep(2)  # the reaper's feed reports every second
    descendants = doomed_server.descendants()
    assert len(_engine_cores(doomed_server)) == 2
    doomed_server.process.send_signal(signal.SIGKILL)
    doomed_server.process.wait(timeout=30)
    left = _survivors(descendants, 60)
    assert not left, [(p.pid, p.name()) for p in left]
