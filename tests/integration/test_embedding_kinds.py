"""The embedding kinds through HTTP on the live server, beyond test_model_kinds.py's checks:
task_type's seed-000 fields against its probabilities, a head trained from a data file with
label values, a three-level calibrated taxonomy, one embedding per unique text of a window;
and `capserve train` in a subprocess.

Texts carry a fresh tag, so the result cache cannot answer and each request is computed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from server.registry_loading import load_registry
from server.settings import load_config
from tests.integration.test_model_kinds import classify, minilm_requests, tagged

REPO = Path(__file__).resolve().parents[2]
TEST_CAPABILITIES = Path(__file__).parent / "capabilities"


def test_task_type_fields_follow_its_probabilities(client: httpx.Client):
    texts = [
        tagged("Summarize this article about the new bridge in three sentences."),
        tagged("hey, how's your day going?"),
        tagged("Give me ten name ideas for a bakery."),
    ]
    for per in classify(client, texts, ["task_type"]):
        result = per["task_type"]
        fields, probabilities = result["fields"], result["probabilities"]
        assert len(probabilities) == 11
        ranked = sorted(probabilities, key=lambda name: -probabilities[name])
        assert fields["task_type_1"] == result["label"] == ranked[0]
        assert fields["task_type_prob"] == pytest.approx(result["confidence"], abs=1e-6)
        if probabilities[ranked[1]] < 0.1:
            assert fields["task_type_2"] == "NA"
        else:
            assert fields["task_type_2"] == ranked[1]
        assert result["details"] == {"head": "logistic_regression", "examples": 330}


def test_a_head_from_its_data_file_scores_by_label_values(client: httpx.Client):
    texts = [
        tagged("The checkout is broken for everyone, fix it immediately!"),
        tagged("Sometime next quarter we could tidy up the team calendar."),
    ]
    urgent, routine = classify(client, texts, ["t_emb_urgency"])
    assert urgent["t_emb_urgency"]["label"] == "urgent"
    assert routine["t_emb_urgency"]["label"] == "routine"
    for per in (urgent, routine):
        result = per["t_emb_urgency"]
        # The values are urgent 1, routine 0: the score is P(urgent).
        assert result["score"] == pytest.approx(result["probabilities"]["urgent"], abs=1e-6)
        assert result["fields"]["t_emb_urgency_1"] == result["label"]
        # 16 rows of the data file plus one example of each label.
        assert result["details"]["examples"] == 18


def test_a_three_level_taxonomy_reports_each_level(client: httpx.Client):
    texts = [tagged("Fresh lime and grapefruit juice."), tagged("They went sailing on the lake.")]
    citrus, sailing = (per["t_emb_deep"] for per in classify(client, texts, ["t_emb_deep"]))
    assert citrus["path"] == ["food", "fruit", "citrus"]
    assert sailing["path"] == ["sport", "water_sports"]  # a leaf one level up stops there
    for result in (citrus, sailing):
        levels = result["details"]["levels"]
        assert [level["label"] for level in levels] == result["path"]
        assert result["label"] == result["path"][-1]
        product = 1.0
        for level in levels:
            product *= level["confidence"]
        assert result["confidence"] == pytest.approx(product, abs=1e-5)
        # The probabilities are level 1's: its choice has the first level's confidence.
        assert set(result["probabilities"]) == {"food", "sport"}
        first = result["probabilities"][result["path"][0]]
        assert first == pytest.approx(levels[0]["confidence"], abs=1e-5)
        assert result["details"]["calibrated"] is True


def test_a_window_embeds_each_unique_text_once(client: httpx.Client):
    caps = ["t_emb_urgency", "t_emb_deep", "t_head", "t_centroid", "task_type", "topic"]
    repeated = tagged("Book a table by the sea for Saturday.")
    texts = [repeated, tagged("Rank these fruits by sweetness."), repeated]
    before = minilm_requests(client)
    results = classify(client, texts, caps)
    assert minilm_requests(client) - before == 2
    assert results[0] == results[2]


def capability_folder(tmp_path: Path) -> Path:
    """A config reading only this file's test capabilities (and their data) from a copy."""
    folder = tmp_path / "capabilities"
    folder.mkdir()
    for path in TEST_CAPABILITIES.glob("t_emb*"):
        shutil.copy(path, folder / path.name)
    config = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    config["capabilities_dir"] = str(folder)
    config_path = tmp_path / "capserve.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


def capserve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "capserve"), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=900)


def test_train_refuses_a_capability_that_is_not_a_head(tmp_path: Path):
    done = capserve("train", "t_emb_deep", "--config", str(capability_folder(tmp_path)))
    assert done.returncode == 2
    assert "only embedding_head and embedding_multilabel train" in done.stderr


@pytest.mark.slow
def test_capserve_train_writes_the_head_for_the_capabilitys_version(tmp_path: Path):
    config_path = capability_folder(tmp_path)
    done = capserve("train", "t_emb_urgency", "--config", str(config_path))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "5-fold stratified cross-validated accuracy" in done.stdout
    head_file = tmp_path / "capabilities" / "t_emb_urgency.head.json"
    (head,) = json.loads(head_file.read_text())["heads"]
    spec = load_registry(load_config(config_path)).get("t_emb_urgency")
    assert head["version"] == spec.version
    assert head["classes"] == ["urgent", "routine"]
    assert head["examples"] == 18
    assert len(head["coefficients"]) == 2 and len(head["coefficients"][0]) == 384
    assert len(head["intercepts"]) == 2
    accuracy = float(done.stdout.split("accuracy ")[1].split()[0])
    assert accuracy >= 0.8  # two well-separated classes
