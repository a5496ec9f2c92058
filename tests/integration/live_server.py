"""Starting and stopping real `capserve serve` processes for the integration tests.

The session server (conftest.py) is one of these; the destructive tests (kill, overload,
SIGTERM, SIGKILL) start disposable ones with `start_server`, each on its own port and config.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 900
STOP_TIMEOUT_S = 90
TEST_CAPABILITIES = Path(__file__).parent / "capabilities"


@dataclass
class LiveServer:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    # The folder the server reads its capabilities from (a copy: tests may change it).
    capabilities_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        """Every live process the server started (its vLLM engine cores among them)."""
        try:
            return list(psutil.Process(self.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S, path: str = "/health") -> None:
        """Waits until `path` answers 200; fails the test with the log's tail if the server
        exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                pytest.fail(
                    f"capserve exited with {self.process.returncode}:\n{self.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"capserve not ready after {timeout_s:.0f} s:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Sends `sig` and waits for the exit (SIGKILL after STOP_TIMEOUT_S); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _merge(tree: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        else:
            tree[key] = value


# The LLM question (llm_multilabel, two prompts per text) the engine tests ask for.
LLM_QUESTION = "t_safety"
LLM_QUESTION_FILE = "t_safety.yaml"


def write_config(
    folder: Path,
    overrides: Mapping[str, Any] | None = None,
    test_capabilities: bool = True,
    extra_models: Mapping[str, Any] | None = None,
    llm_question: bool = True,
) -> Path:
    """configs/default.yaml with `overrides` merged in, reading its capabilities from a copy of
    the shipped pack (plus, with `test_capabilities`, the test-only ones; with `llm_question`
    at least `t_safety`, an LLM question for the engine tests) in `folder`."""
    capabilities = folder / "capabilities"
    shutil.copytree(REPO / "configs/capabilities", capabilities)
    for path in sorted(TEST_CAPABILITIES.glob("*")):
        wanted = test_capabilities or (llm_question and path.name == LLM_QUESTION_FILE)
        if path.is_file() and wanted:
            shutil.copy(path, capabilities / path.name)
    config = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    config["capabilities_dir"] = str(capabilities)
    config["models"].update(extra_models or {})
    _merge(config, overrides or {})
    path = folder / "capserve.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_server(
    folder: Path,
    config_path: Path,
    env: Mapping[str, str] | None = None,
    ready_path: str | None = "/health",
) -> LiveServer:
    """Starts `capserve serve` on a free port, logging to `folder/server.log`; with `ready_path`,
    returns once it answers 200 there."""
    port = free_port()
    log_path = folder / "server.log"
    capserve = Path(sys.executable).parent / "capserve"  # the installed console script
    cmd = [str(capserve), "serve", "--config", str(config_path), "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO
        )
    capabilities_dir = Path(yaml.safe_load(config_path.read_text())["capabilities_dir"])
    live = LiveServer(f"http://127.0.0.1:{port}", log_path, process, capabilities_dir)
    if ready_path is not None:
        try:
            live.wait_ready(path=ready_path)
        except BaseException:
            live.stop(signal.SIGKILL)
            raise
    return live


@contextmanager
def disposable_server(folder: Path, overrides: Mapping[str, Any]) -> Iterator[LiveServer]:
    """A server of its own on the shipped pack (plus the LLM test question) with `overrides`,
    killed (SIGKILL) at the end: for tests that kill or restart parts of it."""
    live = start_server(folder, write_config(folder, overrides, test_capabilities=False))
    try:
        yield live
    finally:
        live.stop(signal.SIGKILL)
