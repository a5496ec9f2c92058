from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_default_config_loads_with_working_defaults():
    config = load_config(REPO / "configs/default.yaml", environ={})
    assert config.batching.window_ms == 100 and config.batching.mode == "batched"
    assert config.capabilities_dir == REPO / "configs/capabilities"
    assert config.models["smollm2"].runner == "generate"
    assert config.models_dir == Path.home() / ".cache/capserve/models"


def test_environment_overrides_nested_keys():
    env = {
        "CAPSERVE__BATCHING__WINDOW_MS": "25",
        "CAPSERVE__BATCHING__MODE": "naive",
        "CAPSERVE__MODELS__SMOLLM2__SOURCE": "/models/mine",
        "CAPSERVE__MODELS_DIR": "/tmp/m",
        "UNRELATED": "1",
    }
    config = load_config(REPO / "configs/default.yaml", environ=env)
    assert config.batching.window_ms == 25 and config.batching.mode == "naive"
    assert config.models["smollm2"].source == "/models/mine"
    assert config.models_dir == Path("/tmp/m")


def test_bad_values_name_the_file_and_key(tmp_path: Path):
    env = {"CAPSERVE__BATCHING__WINDOW_MS": "-1"}
    with pytest.raises(ConfigError, match=r"default.yaml: batching.window_ms"):
        load_config(REPO / "configs/default.yaml", environ=env)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {m: {source: x, runner: generate}}\nbatching: {windw_ms: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: batching.windw_ms: Extra inputs"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", environ={})
