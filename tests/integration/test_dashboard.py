"""GET /dashboard in a real headless Chromium, against the session server (real engines): the
page loads without a console error or JS exception, shows live numbers, and they change under
load. Its screenshot goes to /tmp/docs-snippets/dashboard.png (for the docs)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.browser import Page, headless_page
from tests.integration.live_server import LiveServer

SCREENSHOT = Path("/tmp/docs-snippets/dashboard.png")
# The load: ROUNDS rounds of CONCURRENT requests (they share windows), a pause between rounds
# so that the load spans several refreshes of the page (one every 2 s).
ROUNDS = 4
CONCURRENT = 4
TEXTS_PER_REQUEST = 3
PAUSE_S = 1.5
REQUESTS = ROUNDS * CONCURRENT


def text_of(page: Page, element_id: str) -> str:
    value = page.evaluate(f"document.getElementById({element_id!r}).textContent")
    assert isinstance(value, str), element_id
    return value


def leading_number(text: str) -> float:
    return float(text.split()[0])


def wait_for(page: Page, condition: str, timeout_s: float = 30.0) -> None:
    """Pumps the page's events until the JS `condition` is true."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"Boolean({condition})"):
        if time.monotonic() > deadline:
            pytest.fail(f"the dashboard never met {condition!r}; problems: {page.problems()}")
        page.pump(0.25)


def capability_executions(page: Page, name: str) -> int:
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('#capabilities-body tr'))"
        ".map(tr => Array.from(tr.cells).map(td => td.textContent))"
    )
    for cells in rows:
        if cells[0] == name:
            return int(cells[1])
    return 0


def send_load(url: str, marker: str) -> None:
    """/classify requests of distinct texts (no cache hit), each answered 200."""

    def classify(client: httpx.Client, number: int) -> None:
        texts = [f"dashboard {marker} request {number} text {j}" for j in range(TEXTS_PER_REQUEST)]
        answer = client.post("/classify", json={"texts": texts, "capabilities": ["sentiment"]})
        assert answer.status_code == 200, answer.text

    with (
        httpx.Client(base_url=url, timeout=300) as client,
        ThreadPoolExecutor(CONCURRENT) as pool,
    ):
        for round_ in range(ROUNDS):
            numbers = range(round_ * CONCURRENT, (round_ + 1) * CONCURRENT)
            list(pool.map(lambda n: classify(client, n), numbers))
            time.sleep(PAUSE_S)


def test_dashboard_shows_live_numbers_that_change_under_load(
    server: LiveServer, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex
    with headless_page(tmp_path / "chromium") as page:
        page.navigate(f"{server.url}/dashboard")
        wait_for(page, "document.getElementById('status').textContent === 'live'")
        assert text_of(page, "uptime") != "-"
        assert text_of(page, "engines-body"), "no engine rows"
        requests_before = leading_number(text_of(page, "requests"))
        texts_before = leading_number(text_of(page, "texts"))
        windows_before = int(text_of(page, "windows"))
        sentiment_before = capability_executions(page, "sentiment")
        refreshes_before = int(text_of(page, "refreshes"))

        send_load(server.url, marker)

        wanted = requests_before + REQUESTS
        wait_for(page, f"parseFloat(document.getElementById('requests').textContent) >= {wanted}")
        assert leading_number(text_of(page, "texts")) >= texts_before + REQUESTS * TEXTS_PER_REQUEST
        assert int(text_of(page, "windows")) > windows_before
        assert capability_executions(page, "sentiment") > sentiment_before
        assert float(text_of(page, "throughput")) > 0  # texts/s over the last ten seconds
        assert float(text_of(page, "request-rate")) > 0
        assert text_of(page, "latency-p50") != "-" and text_of(page, "latency-p95") != "-"
        assert int(text_of(page, "refreshes")) > refreshes_before
        assert marker not in page.evaluate("document.documentElement.outerHTML")

        page.screenshot(SCREENSHOT)
        page.pump(0.5)
        assert page.problems() == []
    assert SCREENSHOT.stat().st_size > 10_000
