"""A real headless Chromium of the tests' own, driven over the DevTools protocol.

playwright cannot download its browsers here, so the tests start Debian's `chromium` with
`--remote-debugging-port=0`, read the WebSocket address it prints on stderr ("DevTools
listening on ws://..."), open one page and talk to it with the `websockets` package. Every
console message, JS exception and browser log entry of the page is kept in `events`, for the
tests to assert there was none. `make test` installs chromium when it is missing (`make
test-services`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
# Event methods that report a problem on the page.
CONSOLE = "Runtime.consoleAPICalled"
EXCEPTION = "Runtime.exceptionThrown"
LOG_ENTRY = "Log.entryAdded"


class BrowserError(RuntimeError):
    """Chromium did not start, or a DevTools call failed."""


@dataclass
class PageProblem:
    """A console message, a JS exception or a log entry of the page."""

    method: str
    level: str
    text: str


@dataclass
class Page:
    """One tab, attached with a flat DevTools session."""

    socket: ClientConnection
    session_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    _next_id: int = 1000

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return _call(self.socket, method, params, self.session_id, self, self._take_id())

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def pump(self, seconds: float) -> None:
        """Reads the events that arrive within `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(self.socket.recv(timeout=left))
            except TimeoutError:
                return
            self._keep(message)

    def _keep(self, message: dict[str, Any]) -> None:
        if "method" in message and message.get("sessionId") == self.session_id:
            self.events.append(message)

    def navigate(self, url: str, timeout_s: float = CALL_TIMEOUT_S) -> None:
        """Opens `url` and waits for its load event."""
        seen = len(self.events)
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {answer['errorText']}")
        deadline = time.monotonic() + timeout_s
        while not any(e["method"] == "Page.loadEventFired" for e in self.events[seen:]):
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not load within {timeout_s:.0f} s")
            self.pump(0.2)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JS expression on the page (a thrown error is a BrowserError)."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression!r} threw: {answer['exceptionDetails'].get('text')}")
        return answer["result"].get("value")

    def screenshot(self, path: Path, width: int = 1280) -> None:
        """A PNG of the whole page at `width` CSS pixels."""
        self._viewport(width, 800)
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self._viewport(width, height)
        answer = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(answer["data"]))

    def _viewport(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.pump(0.3)  # a relayout at the new size

    def problems(self) -> list[PageProblem]:
        """Console errors and assertions, JS exceptions and error log entries so far."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == CONSOLE and params.get("type") in {"error", "assert"}:
                text = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                found.append(PageProblem(CONSOLE, params["type"], text))
            elif event["method"] == EXCEPTION:
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text", "")
                found.append(PageProblem(EXCEPTION, "exception", str(text)))
            elif event["method"] == LOG_ENTRY and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(
                    PageProblem(LOG_ENTRY, "error", f"{entry.get('url')}: {entry['text']}")
                )
        return found


def _call(
    socket: ClientConnection,
    method: str,
    params: dict[str, Any],
    session_id: str | None,
    page: Page | None,
    call_id: int,
) -> dict[str, Any]:
    message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
    if session_id is not None:
        message["sessionId"] = session_id
    socket.send(json.dumps(message))
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        answer = json.loads(socket.recv(timeout=left))
        if answer.get("id") == call_id:
            if "error" in answer:
                raise BrowserError(f"{method}: {answer['error'].get('message')}")
            result: dict[str, Any] = answer.get("result", {})
            return result
        if page is not None:
            page._keep(answer)
    raise BrowserError(f"{method}: no answer within {CALL_TIMEOUT_S:.0f} s")


def _devtools_url(process: subprocess.Popen[bytes], stderr_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        found = LISTENING.search(stderr_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise BrowserError(f"chromium printed no DevTools address in {START_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ends the chromium this module started and its helpers (its own process group)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # helpers that outlived the browser


@contextlib.contextmanager
def headless_page(directory: Path) -> Iterator[Page]:
    """A new headless chromium (profile and stderr in `directory`) with one blank page whose
    Runtime, Log and Page events are on; the browser is killed on exit, whatever happens."""
    binary = shutil.which("chromium")
    if binary is None:
        raise BrowserError("chromium is not installed: run `make test-services`")
    profile = directory / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    stderr_path = directory / "chromium.log"
    command = [
        binary,
        "--headless",
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        *(["--no-sandbox"] if os.geteuid() == 0 else []),  # chromium refuses root otherwise
        "about:blank",
    ]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    try:
        url = _devtools_url(process, stderr_path)
        with connect(url, max_size=64 * 1024 * 1024, open_timeout=START_TIMEOUT_S) as socket:
            target = _call(socket, "Target.createTarget", {"url": "about:blank"}, None, None, 1)
            attached = _call(
                socket,
                "Target.attachToTarget",
                {"targetId": target["targetId"], "flatten": True},
                None,
                None,
                2,
            )
            page = Page(socket, attached["sessionId"])
            for domain in ("Runtime", "Log", "Page"):
                page.call(f"{domain}.enable")
            yield page
    finally:
        _stop(process)
