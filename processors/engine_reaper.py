"""No orphan engines: a watchdog process that kills the server's engine processes once the
server is gone, however it died (SIGKILL included).

The server starts the watchdog (`python -m processors.engine_reaper`) in a session of its own,
with a pipe on its stdin, and writes `<pid> <create_time>` lines to the pipe for each engine
process it started: its direct children that are vLLM engine cores (process name `VLLM::...`),
with their descendants. Nothing else: a process that runs engines in-process beside other
children (a test session running a server, a Redis) must never have those killed. When the
pipe closes, i.e. when the server exited or was killed, the watchdog kills each of those
processes that is still the one it was told about (same create time: no PID reuse), with their
own children, and exits.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO

import psutil  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

# How often the server side looks for new descendants to report (a restart adds some).
SCAN_INTERVAL_S = 1.0


def is_vllm_engine(process: psutil.Process) -> bool:
    """A vLLM engine core (or worker): vLLM names its processes `VLLM::EngineCore`, ..."""
    try:
        return bool(process.name().startswith("VLLM::"))
    except psutil.Error:
        return False


def _identity(process: psutil.Process) -> tuple[int, float] | None:
    """(pid, create time) of a process to reap; None for multiprocessing's resource tracker,
    which exits by itself with the server and cleans up shared memory as it does."""
    try:
        if "resource_tracker" in " ".join(process.cmdline()):
            return None
        return process.pid, process.create_time()
    except psutil.Error:
        return None


class EngineReaper:
    """The server side: starts the watchdog and reports this process's descendants to it, from
    a thread of its own, every SCAN_INTERVAL_S and soon after `report_soon()`."""

    def __init__(
        self,
        interval_s: float = SCAN_INTERVAL_S,
        is_engine: Callable[[psutil.Process], bool] = is_vllm_engine,
    ) -> None:
        self._interval_s = interval_s
        self._is_engine = is_engine
        self._reported: set[tuple[int, float]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "processors.engine_reaper"],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a signal to the server's process group does not reach it
            close_fds=True,
        )
        self._thread = threading.Thread(target=self._scan, name="engine-reaper-feed", daemon=True)
        self._thread.start()

    def _scan(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.report_now()

    def report_soon(self) -> None:
        """Asks the feed thread to report new descendants now (e.g. after an engine started)."""
        self._wake.set()

    def report_now(self) -> None:
        """Reports the engine processes not reported yet: the direct children that are engines,
        and their descendants (blocking, a few ms; safe from any thread)."""
        process, reaper = self._process, self.pid
        if process is None or process.stdin is None:
            return
        try:
            engines = [
                c for c in psutil.Process().children() if c.pid != reaper and self._is_engine(c)
            ]
            processes = [p for e in engines for p in (e, *e.children(recursive=True))]
        except psutil.Error:
            return
        found = {i for c in processes if (i := _identity(c)) is not None}
        with self._lock:
            new = found - self._reported
            if not new:
                return
            try:
                process.stdin.write("".join(f"{pid} {t!r}\n" for pid, t in new).encode())
                process.stdin.flush()
            except (OSError, ValueError):  # the watchdog is gone: nothing to report to
                return
            self._reported |= new

    def stop(self) -> None:
        """Closes the pipe: the watchdog kills what is left of the engines and exits."""
        self._stop.set()
        self._wake.set()
        process = self._process
        if process is None:
            return
        with self._lock, contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_reports(stream: IO[str]) -> list[tuple[int, float]]:
    """Reads `<pid> <create_time>` lines until the stream closes."""
    reported = []
    for line in stream:
        with contextlib.suppress(ValueError):
            pid, created = line.split()
            reported.append((int(pid), float(created)))
    return reported


def reap(reported: Iterable[tuple[int, float]]) -> int:
    """Kills every reported process that is still the same process, and its children; returns
    how many it killed."""
    targets: dict[int, psutil.Process] = {}
    for pid, created in reported:
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - created) > 1e-3:
                continue  # the PID was reused by another process
            for p in (process, *process.children(recursive=True)):
                targets[p.pid] = p
        except psutil.Error:
            continue
    for process in targets.values():
        with contextlib.suppress(psutil.Error):
            process.kill()
    _wait_dead(targets.values(), timeout_s=10.0)
    return len(targets)


def _wait_dead(processes: Iterable[psutil.Process], timeout_s: float) -> None:
    """Waits until every process is gone (or a zombie its parent has yet to collect)."""
    deadline = time.monotonic() + timeout_s
    left = list(processes)
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        if left:
            time.sleep(0.05)


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def main() -> int:
    reported = read_reports(sys.stdin)
    killed = reap(reported)
    if killed:
        print(f"capserve engine reaper: killed {killed} orphaned process(es)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
