"""The raw-limit benchmark: which engine work a round's requests cost (bench.raw_limit)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.raw_limit import WORKER_RETRIES, limit_jobs, limit_row, run_worker
from bench.workload import BenchRequest
from capabilities.results import CapabilityResult
from processors.questions.standalone import JsonPrompt
from server.registry_loading import load_registry
from server.settings import load_config

REPO = Path(__file__).resolve().parents[2]


class RecordingQuestions:
    """StandaloneQuestions' prompt builders, recording the dependency results they are given."""

    def __init__(self) -> None:
        self.deps: dict[str, Mapping[str, CapabilityResult]] = {}

    def json_prompt(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> JsonPrompt:
        self.deps[text] = deps
        return JsonPrompt([len(text), 1, 2], False)

    def prompts(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> list[list[int]]:
        return [[len(text)]]


def test_each_distinct_text_is_embedded_once_and_prompted_once_per_llm_capability():
    registry = load_registry(load_config(REPO / "configs/default.yaml", environ={}))
    workload = [
        BenchRequest(("a", "b"), ("topic",)),
        BenchRequest(("a",), ("sentiment", "escalation")),  # "a" again: embedded once
        BenchRequest(("long text",), ("recommendations",)),
    ]
    answers = {"long text": {"task_type": "Code Generation", "complexity": 0.42}}
    questions = RecordingQuestions()
    work = limit_jobs(registry, questions, workload, answers)  # type: ignore[arg-type]
    assert work.distinct_texts == 3
    by_task = {(job.task, job.model): job for job in work.jobs}
    assert sorted(by_task) == [("embed", "minilm"), ("generate", "smollm2")]
    assert sorted(by_task[("embed", "minilm")].texts) == ["a", "b", "long text"]
    generate = by_task[("generate", "smollm2")]
    assert generate.capability == "recommendations" and generate.prompts == [[9, 1, 2]]
    # The cue reads capserve's own answers of the round for the text.
    deps = questions.deps["long text"]
    assert deps["task_type"].label == "Code Generation" and deps["complexity"].score == 0.42


def test_the_fraction_of_the_limit_is_limit_time_over_capserve_time():
    work = limit_jobs(
        load_registry(load_config(REPO / "configs/default.yaml", environ={})),
        RecordingQuestions(),  # type: ignore[arg-type]
        [BenchRequest(("x", "y"), ("topic",))],
        {},
    )
    row = limit_row(4.0, work, {"seconds": 3.0, "jobs": []})
    assert row["fraction_of_limit"] == 0.75
    assert row["limit_distinct_texts_per_s"] == round(2 / 3.0, 2)
    assert row["capserve_distinct_texts_per_s"] == 0.5


def _fake_workers(monkeypatch: pytest.MonkeyPatch, codes: list[int]) -> list[list[str]]:
    """subprocess.run answering with these return codes in turn; a worker that exits 0, or
    is killed with code -9 (after its timing), writes its timing row."""
    started: list[list[str]] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        started.append(command)
        code = codes[len(started) - 1]
        if code in (0, -9):
            Path(command[-1]).write_text(json.dumps([{"seconds": 1.5, "try": len(started)}]))
        return subprocess.CompletedProcess(command, code)

    monkeypatch.setattr(subprocess, "run", run)
    return started


def test_a_worker_killed_by_a_signal_is_started_again(monkeypatch, tmp_path: Path):
    started = _fake_workers(monkeypatch, [-6, 0])
    rows = run_worker(tmp_path / "jobs.json", tmp_path / "result.json")
    assert rows == [{"seconds": 1.5, "try": 2}]
    assert len(started) == 2 and started[0][1:3] == ["-m", "bench.raw_limit_worker"]


def test_a_worker_that_fails_or_keeps_dying_raises(monkeypatch, tmp_path: Path):
    started = _fake_workers(monkeypatch, [1, 0])
    with pytest.raises(subprocess.CalledProcessError):
        run_worker(tmp_path / "jobs.json", tmp_path / "result.json")
    assert len(started) == 1  # an error exit is not retried
    started = _fake_workers(monkeypatch, [-6] * (WORKER_RETRIES + 1))
    with pytest.raises(subprocess.CalledProcessError):
        run_worker(tmp_path / "jobs.json", tmp_path / "result.json")
    assert len(started) == WORKER_RETRIES + 1


def test_a_timing_written_before_the_worker_died_is_kept(monkeypatch, tmp_path: Path):
    (tmp_path / "result.json").write_text("[]")  # a stale result is never read
    started = _fake_workers(monkeypatch, [-9])
    assert run_worker(tmp_path / "jobs.json", tmp_path / "result.json") == [
        {"seconds": 1.5, "try": 1}
    ]
    assert len(started) == 1
