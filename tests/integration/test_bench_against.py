"""`capserve bench --against vllm-serve --quick` end to end: capserve and the peer's two
`vllm serve` servers really start, both systems answer the same workload, and none of their
processes is left running afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.servers import group_processes

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 900


@pytest.mark.slow
def test_quick_comparison_reports_both_systems(tmp_path: Path):
    output = tmp_path / "against.json"
    completed = subprocess.run(
        [
            str(Path(sys.executable).parent / "capserve"),
            "bench",
            "--against",
            "vllm-serve",
            "--quick",
            "--config",
            str(REPO / "configs/default.yaml"),
            "--output",
            str(output),
        ],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        start_new_session=True,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(output.read_text())["comparison"]
    totals = result["summary"]["totals"]
    assert set(totals) == {"capserve", "vllm-serve"}
    for system, row in totals.items():
        assert row["failures"] == 0, system
        assert row["texts"] > 0 and row["texts_per_s"] > 0
        assert row["computed_prompt_tokens"] > 0
    assert {p["system"] for p in result["phases"]} == {"capserve", "vllm-serve"}
    agreement = result["agreement"]
    assert agreement, "no capability was compared"
    assert all(0.0 <= row["rate"] <= 1.0 and row["compared"] > 0 for row in agreement.values())
    # Embedding kinds read the same vectors the same way on both sides: they agree.
    assert agreement["topic"]["rate"] >= 0.9
    assert result["cache_replay"]["cached"] == result["cache_replay"]["requests"]
    assert output.with_suffix(".md").read_text().startswith("Command: `capserve bench")
    # Every process the benchmark started (servers and their engines) is gone.
    assert len(result["servers"]) == 3  # capserve, and vllm serve for each of the two models
    for name, server in result["servers"].items():
        assert not group_processes(server["pid"]), f"{name} left processes running"
