"""`capserve eval` without engines: bad files exit 1 before anything starts; rows run through
the real runtime on the fake pool, and a failure stays an error of its row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capabilities.registry import CapabilityRegistry
from evaluation.dataset import EvalRow, LabelSpace, load_dataset
from evaluation.run import (
    RunFacts,
    build_report,
    eval_config,
    evaluate,
    label_spaces,
)
from schemas.config import CapServeConfig
from server.cli import main
from server.settings import load_config
from tests.unit.fakes import SHIPPED_CAPABILITIES, SHIPPED_RUNNERS, FakePool, FakeProcessor

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "tests" / "data" / "eval_smoke.jsonl"
SECRET = "SECRET PROMPT TEXT 5512"


def test_a_bad_file_exits_1_naming_lines_and_capabilities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = tmp_path / "bad.jsonl"
    rows = [
        {"text": SECRET, "labels": {"sentiment": "neutral"}},
        {"text": SECRET, "labels": {"sentiment": ["neutral"]}},
        {"text": SECRET, "labels": {"mood": "calm"}},
        {"text": SECRET, "labels": {"creativity_scope": -0.1}},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["eval", str(path), "--config", str(REPO / "configs/default.yaml")]) == 1
    err = capsys.readouterr().err
    assert "line 2: capability 'sentiment': must be one label" in err
    assert "line 3: capability 'mood' is unknown" in err
    assert "line 4: capability 'creativity_scope': -0.1 is outside [0, 1]" in err
    assert "SECRET" not in err


def test_a_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["eval", str(tmp_path / "none.jsonl")]) == 1
    assert "none.jsonl" in capsys.readouterr().err


def test_eval_config_forces_the_layout_and_skips_warm_up_and_cache():
    base = load_config(REPO / "configs/default.yaml")
    config = eval_config(base, "own")
    assert config.prompting.layout_override == "own"
    assert not config.server.warmup and not config.cache.enabled
    assert base.server.warmup  # the loaded configuration is left as it was
    assert eval_config(base, None).prompting.layout_override == base.prompting.layout_override


def smoke_setup(
    layout: str | None,
) -> tuple[CapServeConfig, dict[str, LabelSpace], list[EvalRow]]:
    config = eval_config(load_config(REPO / "configs/default.yaml"), layout)
    config.capabilities_dir = SHIPPED_CAPABILITIES
    registry = CapabilityRegistry.from_directory(SHIPPED_CAPABILITIES, SHIPPED_RUNNERS)
    all_spaces = label_spaces(registry)
    spaces = {n: s for n, s in all_spaces.items() if s is not None}
    return config, spaces, load_dataset(SMOKE, all_spaces)


async def test_rows_run_through_the_runtime_and_failures_stay_per_row():
    config, spaces, rows = smoke_setup("shared")
    failing = rows[2].text
    pool = FakePool(FakeProcessor(fail_texts={failing}))
    runtime, outcomes, seconds = await evaluate(config, rows, spaces, concurrency=4, pool=pool)
    assert pool.started == 1 and pool.stopped == 1
    assert seconds >= 0
    assert [o.line for o in outcomes] == [r.line for r in rows]
    # Every capability of the failing row failed (the fake fails the text everywhere).
    assert {e.capability for e in outcomes[2].errors} == set(rows[2].gold)
    assert all(e.line == rows[2].line for e in outcomes[2].errors)
    assert all(failing not in e.reason for e in outcomes[2].errors)
    for row, outcome in zip(rows, outcomes, strict=True):
        if outcome is not outcomes[2]:
            assert set(outcome.predictions) == set(row.gold)
    report = build_report(
        runtime.registry, spaces, rows, outcomes, RunFacts("smoke", None, "shared", seconds)
    )
    names = [c.name for c in report.capabilities]
    assert names == sorted({name for row in rows for name in row.gold})
    for capability in report.capabilities:
        labeled = sum(capability.name in row.gold for row in rows)
        failed = int(capability.name in rows[2].gold)
        assert capability.errors == failed
        assert capability.metrics is not None and capability.metrics.n == labeled - failed


async def test_a_failing_capability_leaves_the_rest_of_each_row():
    config, spaces, rows = smoke_setup(None)
    pool = FakePool(FakeProcessor(fail_on={"task_type"}))
    _, outcomes, _ = await evaluate(config, rows, spaces, concurrency=8, pool=pool)
    for row, outcome in zip(rows, outcomes, strict=True):
        failed = {e.capability for e in outcome.errors}
        # complexity depends on task_type, so it cannot run either.
        assert failed == {"task_type", "complexity"} & set(row.gold)
        assert set(outcome.predictions) == set(row.gold) - failed
        assert all("SECRET" not in e.reason for e in outcome.errors)
