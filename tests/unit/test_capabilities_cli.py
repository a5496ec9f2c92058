"""`capserve capabilities list|validate`: the configured set as a table, a folder checked with
the configuration's models, no engine started."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from capabilities.loader import CapabilityConfigError
from processors.engines import EngineFactory
from schemas.config import CapServeConfig
from server.cli import main
from server.registry_loading import load_registry
from server.settings import load_config
from tests.unit.conftest import SEED_DAG

LONG_WHEN = "classification.label in ['question', 'complaint'] and classification.confidence > 0.2"
GATED = {
    "name": "gated",
    "kind": "rule",
    "depends_on": ["classification"],
    "when": LONG_WHEN,
    "labels": ["yes", "no"],
    "rule": {"cases": [{"when": {"classification": "question"}, "label": "yes"}], "default": "no"},
}


def write_folder(path: Path, *definitions: object) -> Path:
    path.mkdir()
    for number, definition in enumerate(definitions):
        text = definition if isinstance(definition, str) else yaml.safe_dump(definition)
        (path / f"{number:02d}.yaml").write_text(text)
    return path


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration with one pooling model, serving the seed DAG plus a gated rule."""

    def no_engine(*_args: object) -> None:
        raise AssertionError("the capabilities commands must start no engine")

    monkeypatch.setattr(EngineFactory, "create", no_engine)
    write_folder(tmp_path / "served", *SEED_DAG, GATED)
    path = tmp_path / "capserve.yaml"
    config = {
        "capabilities_dir": "served",
        "models": {"minilm": {"source": "x", "runner": "pooling"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def served_config(config_path: Path) -> CapServeConfig:
    return load_config(config_path, environ={})


def test_list_prints_one_row_per_capability(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["capabilities", "list", "--config", str(config_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "kind", "model", "layout", "depends_on", "when", "version"]
    registry = load_registry(served_config(config_path))
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == registry.names()
    for spec in registry.specs():
        cells = rows[spec.name].split()
        assert cells[:3] == [spec.name, spec.kind, spec.model or "-"]
        assert cells[-1] == spec.version
    assert "recommendations" in rows and "classification" in rows["recommendations"].split()
    gated = rows["gated"]
    assert LONG_WHEN not in gated and "classification.label in" in gated and "…" in gated


def test_config_may_come_before_the_action(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["capabilities", "--config", str(config_path), "list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + len(SEED_DAG) + 1


def test_validate_a_valid_folder(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_folder(tmp_path / "candidate", *SEED_DAG)
    assert main(["capabilities", "validate", str(folder), "--config", str(config_path)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"{len(SEED_DAG)} capabilities valid" and out.err == ""


def test_validate_reports_every_problem_and_exits_1(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_folder(
        tmp_path / "candidate",
        *SEED_DAG,
        # smollm2 is not among the configuration's models.
        {"name": "speech", "kind": "llm_choice", "model": "smollm2", "labels": ["a", "b"]},
        {**GATED, "depends_on": ["classification", "ghost"]},
        "name: [unclosed",
    )
    code = main(["capabilities", "validate", str(folder), "--config", str(config_path)])
    assert code == 1
    out = capsys.readouterr()
    assert out.out == ""
    errors = out.err.splitlines()
    assert any("03.yaml" in e and "unknown model 'smollm2'" in e for e in errors)
    assert any("04.yaml" in e and "unknown dependency 'ghost'" in e for e in errors)
    assert any("05.yaml" in e and "not valid YAML" in e for e in errors)
    candidate = served_config(config_path).model_copy(update={"capabilities_dir": folder})
    with pytest.raises(CapabilityConfigError) as caught:
        load_registry(candidate)
    problems = caught.value.problems
    assert len(problems) >= 3
    assert out.err == "".join(f"{p}\n" for p in problems) + (
        f"capserve: {len(problems)} problem(s) in {folder}\n"
    )


def test_validate_a_missing_folder(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert main(["capabilities", "validate", str(missing), "--config", str(config_path)]) == 1
    assert f"capabilities directory {missing} does not exist" in capsys.readouterr().err
