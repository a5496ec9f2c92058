"""The Python client and `capserve classify FILE` against the live session server (auth off;
with auth on, they are tested in test_security.py, on its secured server)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from client import AsyncCapserveClient, BadRequest, CapserveClient
from schemas.api import ClassifyResponse
from tests.integration.live_server import REPO, LiveServer

SENTIMENTS = {"positive", "negative", "neutral"}
CAPSERVE = Path(sys.executable).parent / "capserve"


def test_sync_client_returns_typed_results(server: LiveServer):
    with CapserveClient(server.url) as client:
        response = client.classify(
            ["the service was great", "the food was cold and awful"],
            ["sentiment"],
            priority="high",
            timeout_ms=120_000,
        )
        assert isinstance(response, ClassifyResponse)
        assert [r.index for r in response.results] == [0, 1]
        assert all(r.results["sentiment"].label in SENTIMENTS for r in response.results)
        assert "sentiment" in {c.name for c in client.capabilities().capabilities}
        with pytest.raises(BadRequest) as refused:
            client.classify(["hello"], ["no_such_capability"])
        assert refused.value.status == 422 and refused.value.type == "unknown_capability"


async def test_async_classify_many_keeps_order_and_isolates_a_failed_batch(server: LiveServer):
    texts = [f"review {i}: the delivery was {'fast' if i % 2 else 'late'}" for i in range(11)]
    texts[5] = "x" * 5000  # over limits.max_text_chars: its whole request (texts 4-5) is 422
    async with AsyncCapserveClient(server.url) as client:
        outcomes = await client.classify_many(texts, ["sentiment"], batch_size=2, concurrency=3)
    assert [o.index for o in outcomes] == list(range(11))
    failed = [o.index for o in outcomes if not o.ok]
    assert failed == [4, 5]
    assert all(isinstance(o.error, BadRequest) and o.error.status == 422 for o in outcomes[4:6])
    for outcome in outcomes:
        if outcome.ok:
            assert outcome.result is not None
            assert outcome.result.results["sentiment"].label in SENTIMENTS


def _lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    # The child may be writing a line as this reads: only what ends with a newline is whole.
    whole, _, _ = path.read_text().rpartition("\n")
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


def test_classify_file_interrupted_by_ctrl_c_then_resumed(server: LiveServer, tmp_path: Path):
    total = 300
    rows = tmp_path / "reviews.jsonl"
    run = uuid.uuid4().hex[:8]  # texts no earlier run left in the result cache
    with rows.open("w") as f:
        for i in range(total):
            mood = ("great", "slow", "fine", "broken")[i % 4]
            text = f"order {i} of batch {run} arrived {mood}"
            f.write(json.dumps({"id": f"r{i:03d}", "text": text}) + "\n")
    out = tmp_path / "reviews.out.jsonl"
    command = [str(CAPSERVE), "classify", str(rows), "--capabilities", "sentiment",
               "--id-field", "id", "--url", server.url, "--output", str(out),
               "--batch-size", "3", "--concurrency", "1", "--progress-interval", "1"]  # fmt: skip
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 240
    while len(_lines(out)) < 12 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr
    assert "interrupted" in stderr and "rows left" in stderr
    partial = _lines(out)
    assert 12 <= len(partial) < total
    assert out.read_text().endswith("\n")  # every line written whole

    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert second.returncode == 0, second.stderr
    assert f"{len(partial)} already in" in second.stderr
    assert "classify: " in second.stderr and "texts/s" in second.stderr  # plain progress lines
    assert "arrived" not in second.stderr + stderr  # never a text
    records = _lines(out)
    ids = [str(r["id"]) for r in records]
    assert sorted(ids) == [f"r{i:03d}" for i in range(total)]  # each exactly once
    for record in records:
        assert record["ok"] is True
        results = record["results"]
        assert isinstance(results, dict) and results["sentiment"]["label"] in SENTIMENTS
