"""Runs last in the session (by its name): plants the log canary in texts sent to the session
server (successes, a validation error, an unknown capability), then reads every server log of
the run (the session server's and those of the disposable servers under the pytest base temp
folder, an engine-kill test's among them) for the canary and for the keys and tokens of the
security tests. None may appear."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.live_server import LiveServer
from tests.integration.log_canary import LOG_CANARY, canary_text
from tests.integration.security_secrets import SECRETS


def plant_canaries(client: httpx.Client) -> None:
    ok = client.post(
        "/classify",
        json={"texts": [canary_text("what a lovely morning")], "capabilities": ["sentiment"]},
    )
    assert ok.status_code == 200, ok.text
    single = client.post(
        "/classify/single",
        json={"text": canary_text("please route this"), "capabilities": ["route"]},
    )
    assert single.status_code == 200, single.text
    too_long = canary_text("x" * 5000)  # over limits.max_text_chars
    invalid = client.post("/classify", json={"texts": [too_long], "capabilities": ["sentiment"]})
    assert invalid.status_code == 422
    unknown = client.post(
        "/classify", json={"texts": [canary_text("hello")], "capabilities": ["no_such_thing"]}
    )
    assert unknown.status_code == 422
    for response in (invalid, unknown):
        assert LOG_CANARY not in response.text  # errors name fields, never the text


def server_logs(base: Path, session_log: Path) -> list[Path]:
    # resolve(): pytest's "<name>current" links lead to folders already found.
    return sorted({path.resolve() for path in (session_log, *base.rglob("server.log"))})


def test_no_log_holds_the_canary_or_a_key(
    server: LiveServer, client: httpx.Client, tmp_path_factory: pytest.TempPathFactory
):
    plant_canaries(client)
    logs = server_logs(tmp_path_factory.getbasetemp(), server.log_path)
    assert server.log_path.is_file() and server.log_path.stat().st_size > 0
    found = []
    for path in logs:
        text = path.read_text(errors="replace")
        assert text, f"{path} is empty: nothing to scan"
        if LOG_CANARY in text:
            found.append(f"{path}: the log canary")
        found += [f"{path}: secret #{i}" for i, s in enumerate(SECRETS) if s in text]
    assert not found, "\n".join(found)
    # The scan read something real: the session server logged the requests just made.
    assert "/classify" in server.log()
