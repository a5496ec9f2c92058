"""The docs check, live half: the commands of README.md and docs/*.md that answer in seconds run
here for real, against the live session server, and a documented output must still have the
shape of what the server answers now.

- every fenced `curl` command (the default address rewritten to the live server's);
- every Python example that talks to a server (`http://localhost:8000`), and the in-process
  example, which starts its own engines;
- `capserve capabilities list` and `capserve capabilities validate`.

The commands that take minutes (`make`, `capserve serve`, `bench*`, `eval`, `train`) are
checked by tests/unit/test_docs.py against the Makefile and capserve's parser, and run by their
own tests (tests/integration/test_bench_against.py, test_eval_cli.py, ...).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import docs_check
from tests.docs_check import REPO, Command, Example
from tests.integration.live_server import LiveServer

DEFAULT_ADDRESS = "localhost:8000"
# A reload that swaps the capabilities would change the server every other test shares: only the
# dry run runs here (tests/unit/test_docs.py checks that the route of the other exists).
CURLS = [
    c
    for c in docs_check.all_commands()
    if c.program == "curl"
    and c.fenced
    and ("/admin/reload" not in c.source or "dry_run" in c.source)
]
EXAMPLES = docs_check.all_examples()
CURL_EXAMPLES = [e for e in EXAMPLES if e.language in ("bash", "sh") and "curl " in e.code]
CLIENT_EXAMPLES = [e for e in EXAMPLES if e.language == "python" and DEFAULT_ADDRESS in e.code]
IN_PROCESS_EXAMPLES = [e for e in EXAMPLES if e.language == "python" and "Runtime" in e.code]


def _address(server: LiveServer) -> str:
    return server.url.removeprefix("http://")


def _run(code: str, timeout_s: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        code, shell=True, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, **kwargs
    )


def test_the_live_docs_check_has_work() -> None:
    assert CURLS and CURL_EXAMPLES and CLIENT_EXAMPLES and IN_PROCESS_EXAMPLES


@pytest.mark.parametrize("command", CURLS, ids=[f"{c.page}:{c.source[:50]}" for c in CURLS])
def test_documented_curl_commands_succeed(server: LiveServer, command: Command) -> None:
    # The words as the shell reads them (a trailing comment would swallow the flag).
    argv = [arg.replace(DEFAULT_ADDRESS, _address(server)) for arg in command.argv]
    done = _run(f"{shlex.join(argv)} --fail-with-body")
    assert done.returncode == 0, f"{command.page}: `{command.source[:80]}`: {done.stdout[-500:]}"


def _matches(documented: Any, actual: Any) -> bool:
    """Documented null stands for anything (a result the cache answered has no window)."""
    if documented is None or actual is None:
        return True
    if isinstance(documented, dict):
        return (
            isinstance(actual, dict)
            and set(documented) == set(actual)
            and all(_matches(documented[k], actual[k]) for k in documented)
        )
    if isinstance(documented, list):
        return isinstance(actual, list) and (
            not documented or not actual or _matches(documented[0], actual[0])
        )
    return not isinstance(actual, dict | list)


@pytest.mark.parametrize(
    "example",
    [e for e in CURL_EXAMPLES if e.output_language == "json"],
    ids=lambda e: e.page,
)
def test_documented_answers_have_the_shape_of_the_live_answers(
    server: LiveServer, example: Example
) -> None:
    done = _run(example.code.replace(DEFAULT_ADDRESS, _address(server)))
    assert done.returncode == 0, done.stderr
    actual = json.loads(done.stdout)
    documented = example.output_json()
    assert _matches(documented, actual), (
        f"{example.page}: the documented answer's fields differ from the server's:\n"
        f"documented {docs_check.shape(documented)}\nlive {docs_check.shape(actual)}"
    )


@pytest.mark.parametrize("example", CLIENT_EXAMPLES, ids=lambda e: e.page)
def test_documented_client_examples_run(
    server: LiveServer, example: Example, tmp_path: Path
) -> None:
    script = tmp_path / "example.py"
    script.write_text(example.code.replace(DEFAULT_ADDRESS, _address(server)))
    done = _run(f"{sys.executable} {script}")
    assert done.returncode == 0, f"{example.page}: {done.stderr[-2000:]}"
    printed = done.stdout.strip().splitlines()
    assert printed, f"{example.page}: the example printed nothing"
    if example.output is not None:
        # The documented output, line for line: the same lines, the errors in the same places
        # (labels and confidences are the models' and may move with the machine's precision).
        documented = example.output.strip().splitlines()
        assert len(printed) == len(documented), f"{example.page}: {printed} against {documented}"
        for got, expected in zip(printed, documented, strict=True):
            assert ("error" in got.lower()) == ("error" in expected.lower()), (got, expected)
            assert got.split()[0] == expected.split()[0], (got, expected)


@pytest.mark.parametrize("example", IN_PROCESS_EXAMPLES, ids=lambda e: e.page)
def test_the_in_process_example_runs(example: Example, tmp_path: Path) -> None:
    """It starts its own engines on configs/default.yaml (a minute or two here)."""
    script = tmp_path / "in_process.py"
    script.write_text(example.code)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = _run(f"{sys.executable} {script}", timeout_s=900, env=env)
    assert done.returncode == 0, f"{example.page}: {done.stderr[-3000:]}"
    # vLLM's own shutdown lines go to stdout too.
    printed = {line.strip() for line in done.stdout.splitlines()}
    assert printed & {"positive", "neutral", "negative"}, done.stdout[-2000:]


def test_documented_capabilities_commands_run() -> None:
    capserve = Path(sys.executable).parent / "capserve"
    listed = _run(f"{capserve} capabilities list")
    assert listed.returncode == 0, listed.stderr
    assert "sentiment" in listed.stdout and "recommendations" in listed.stdout
    # `capserve capabilities validate path/to/folder`, on the shipped folder.
    checked = _run(f"{capserve} capabilities validate configs/capabilities")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    documented = [
        c
        for c in docs_check.all_commands()
        if c.fenced and c.program == "capserve" and c.argv[1:2] == ("capabilities",)
    ]
    assert {c.argv[2] for c in documented} <= {"list", "validate"}, "a new command to run here"
