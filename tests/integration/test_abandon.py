"""A caller leaving a running step, on a disposable server with real engines: the engine
requests of its texts are aborted at once, while the other caller of the same window still
gets its complete answer.

Two requests share one window (a fixed window long enough to hold both) and one LLM step
(t_safety: two prompts per text): a big one of long texts with a short timeout_ms, and a small
one without. At the big one's deadline its prompts are still at the engine; from then on the
engine only finishes the small one's prompts, its requests in flight drop to the small one's
share, and the small one gets a 200 that is not partial.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.integration.live_server import LLM_QUESTION, LiveServer, start_server, write_config
from tests.integration.log_canary import canary_text

pytestmark = pytest.mark.slow

CAPABILITY = LLM_QUESTION  # llm_multilabel: one prompt per label
PROMPTS_PER_TEXT = 2  # its labels
ENGINE = "smollm2"
BIG_TEXTS = 30  # some 40k prompt tokens: they fit the KV cache (about 46k)
SMALL_TEXTS = 2
WINDOW_MS = 1500  # both requests go into one window
BIG_TIMEOUT_MS = WINDOW_MS + 4000  # well inside the step: the big request's prefill is long
CLIENT_TIMEOUT_S = 600.0  # generous: the test asserts outcomes, not speed
POLL_S = 0.05
WORDS = ("parcel", "invoice", "refund", "depot", "ticket", "billing", "route", "order", "label")


@pytest.fixture(scope="module")
def abandon_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("abandon")
    overrides = {
        "batching": {"adaptive": False, "window_ms": WINDOW_MS},
        "cache": {"enabled": False},
        # Every prompt of the step goes to the engine at once.
        "prompting": {"max_tokens_in_flight": 1_000_000},
        "limits": {"request_timeout_s": 600},
    }
    config = write_config(folder, overrides, test_capabilities=False)
    live = start_server(folder, config)
    try:
        yield live
    finally:
        live.stop()


def long_text(n: int) -> str:
    """About 3000 characters (some 600 tokens), different for each n."""
    words = [WORDS[(n * 7 + i * (n % 5 + 1)) % len(WORDS)] for i in range(420)]
    return canary_text((f"Note {n}: " + " ".join(words))[:2900])


@dataclass
class Sample:
    at: float
    in_flight: int
    finished: int  # engine requests that ran to their end, since start
    errors: int


@dataclass
class Observed:
    samples: list[Sample] = field(default_factory=list)
    big_done: float = 0.0
    small_done: float = 0.0
    big: httpx.Response | None = None
    small: httpx.Response | None = None

    def at(self, moment: float) -> Sample:
        """The first sample taken at or after `moment`."""
        return next(s for s in self.samples if s.at >= moment)

    def last_before(self, moment: float) -> Sample:
        return [s for s in self.samples if s.at <= moment][-1]


def engine_sample(stats: dict[str, Any]) -> Sample:
    work = stats["engines"]["work"][ENGINE]
    return Sample(time.monotonic(), work["in_flight"], work["requests"], work["errors"])


async def observe(url: str) -> Observed:
    observed = Observed()
    big_body = {
        "texts": [long_text(n) for n in range(BIG_TEXTS)],
        "capabilities": [CAPABILITY],
        "timeout_ms": BIG_TIMEOUT_MS,
    }
    small_body = {
        "texts": [canary_text(f"Short note {n}: where is my parcel?") for n in range(SMALL_TEXTS)],
        "capabilities": [CAPABILITY],
    }
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                observed.samples.append(engine_sample((await client.get("/stats")).json()))
                await asyncio.sleep(POLL_S)

        async def big() -> None:
            observed.big = await client.post("/classify", json=big_body)
            observed.big_done = time.monotonic()

        async def small() -> None:
            await asyncio.sleep(0.3)  # after the big one, in the same window
            observed.small = await client.post("/classify", json=small_body)
            observed.small_done = time.monotonic()

        poller = asyncio.create_task(poll())
        await asyncio.gather(big(), small())
        await asyncio.sleep(1.0)
        stop.set()
        await poller
    return observed


def test_a_caller_leaving_mid_step_has_its_engine_requests_aborted(abandon_server: LiveServer):
    observed = asyncio.run(observe(abandon_server.url))
    big, small = observed.big, observed.small
    assert big is not None and small is not None
    big_prompts, small_prompts = BIG_TEXTS * PROMPTS_PER_TEXT, SMALL_TEXTS * PROMPTS_PER_TEXT
    start = observed.samples[0]

    # The big request left at its deadline, with nothing (or part) finished.
    assert big.status_code in (200, 504), big.text
    if big.status_code == 200:
        assert big.json()["partial"]

    # The small one, in the same window, got everything it asked for.
    assert small.status_code == 200, small.text
    body = small.json()
    assert not body["partial"] and body["failed_texts"] == 0
    assert body["window"]["requests"] == 2  # one window for both
    for text in body["results"]:
        assert text["error"] is None and text["missing"] == []
        assert set(text["results"]) == {CAPABILITY}
    assert observed.small_done > observed.big_done  # it still waited when the big one left

    # Just before the deadline the big request's prompts were at the engine, far from done ...
    before = observed.last_before(observed.big_done - 0.5)
    assert before.in_flight > small_prompts, before
    unfinished_at_deadline = big_prompts - (before.finished - start.finished)
    assert unfinished_at_deadline >= big_prompts // 4, before
    # ... and once it left, only the small request's share was left in flight (then nothing),
    # long before the big request's remaining prompts could have run.
    assert observed.at(observed.big_done).in_flight <= small_prompts, observed.at(observed.big_done)
    # From the deadline on, the engine finished the small request's prompts and hardly any of
    # the big one's (at most those it was just finishing): the rest were aborted.
    end = observed.samples[-1]
    assert end.in_flight == 0
    finished_after = end.finished - before.finished
    assert finished_after <= small_prompts + unfinished_at_deadline // 2, (
        finished_after,
        unfinished_at_deadline,
    )
    # Aborted requests are not engine errors, and the capability did not fail.
    assert end.errors == start.errors
    stats = httpx.get(f"{abandon_server.url}/stats", timeout=30).json()
    assert stats["capabilities"][CAPABILITY]["errors"] == 0
