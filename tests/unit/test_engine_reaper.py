"""The engine reaper kills the processes it was told about once its pipe closes (the server
died), and only those: a reused PID (another create time) is left alone. Real processes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import psutil  # type: ignore[import-untyped]

from processors.engine_reaper import EngineReaper, read_reports, reap

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]


def _gone(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return True
        time.sleep(0.05)
    return False


def test_reports_are_read_until_the_pipe_closes() -> None:
    text = "12 1700000000.25\nnot a report\n34 1700000001.5\n"
    assert read_reports(io.StringIO(text)) == [(12, 1700000000.25), (34, 1700000001.5)]


def test_reap_kills_reported_processes_and_spares_a_reused_pid() -> None:
    victim = subprocess.Popen(SLEEPER)
    bystander = subprocess.Popen(SLEEPER)
    try:
        created = psutil.Process(victim.pid).create_time()
        other = psutil.Process(bystander.pid).create_time()
        killed = reap([(victim.pid, created), (bystander.pid, other - 5.0)])
        assert killed == 1
        assert _gone(victim)
        assert bystander.poll() is None  # same PID, another process: not touched
    finally:
        for process in (victim, bystander):
            process.kill()
            process.wait()


def test_the_watchdog_kills_the_reported_engines_when_the_pipe_closes() -> None:
    engine = subprocess.Popen(SLEEPER)  # stands in for an engine core process
    bystander = subprocess.Popen(SLEEPER)  # another child: a server under test, a Redis
    reaper = EngineReaper(interval_s=0.05, is_engine=lambda p: p.pid == engine.pid)
    reaper.start()
    try:
        reaper.report_soon()
        assert reaper.pid is not None
        assert os.getsid(reaper.pid) == reaper.pid  # its own session: group signals miss it
        time.sleep(0.5)  # the feed thread reports it
        reaper.stop()  # what a dying server does: its end of the pipe closes
        assert _gone(engine)
        assert not psutil.pid_exists(reaper.pid)  # the watchdog exited too
        assert bystander.poll() is None  # only engines are reaped
    finally:
        for child in (engine, bystander):
            child.kill()
            child.wait()
