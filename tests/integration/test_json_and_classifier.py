"""llm_json and classifier on the live server (real engines, HTTP), with the test-only
capabilities of capabilities/t_json.yaml and t_classifier.yaml and the shipped
`recommendations`: schemas switched per request on one engine, concurrent requests sharing a
window, output cut short as an error result that the rest of the request survives, JSON fields
read by dependents, the text's prefill shared with a question of the same group, and the tiny
classifier's labels from its model config.

Every text carries a fresh uuid, so the result cache cannot answer and each run computes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import jsonschema
import pytest
import yaml

from processors.model_store import classifier_labels
from schemas.config import CapServeConfig, ModelConfig
from tests.integration.live_server import LiveServer

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def fresh(text: str) -> str:
    return f"{text} [{uuid4()}]"


def schemas() -> dict[str, dict[str, Any]]:
    """output_schema by capability, from the YAML the server loaded."""
    found: dict[str, dict[str, Any]] = {}
    for path in (
        HERE / "capabilities/t_json.yaml",
        REPO / "configs/capabilities/recommendations.yaml",
    ):
        loaded = yaml.safe_load(path.read_text())
        for entry in loaded if isinstance(loaded, list) else [loaded]:
            if entry.get("output_schema") is not None:
                found[entry["name"]] = entry["output_schema"]
    return found


def post(client: httpx.Client, texts: list[str], capabilities: list[str]) -> dict[str, Any]:
    response = client.post("/classify", json={"texts": texts, "capabilities": capabilities})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def per_text(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [item["results"] for item in body["results"]]


def assert_conforms(result: dict[str, Any], schema: dict[str, Any]) -> None:
    assert result["error"] is None, result
    jsonschema.validate(result["fields"], schema)


def test_two_schemas_in_one_request_and_in_concurrent_requests(
    server: LiveServer,
):
    caps = ["t_json_mood", "t_json_facts"]
    known = schemas()
    batches = [
        [fresh("I am so happy, we won the final!"), fresh("Where is my parcel?")],
        [fresh("The meeting moved to 3 pm.")],
        [fresh("This is the third time the app crashed. I am furious.")],
        [fresh("Can you recommend a calm place to read?")],
        [fresh("Quarterly revenue grew by four percent.")],
        [fresh("Happy birthday, grandma!")],
    ]

    def one(texts: list[str]) -> dict[str, Any]:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            return post(c, texts, caps)

    with ThreadPoolExecutor(len(batches)) as pool:
        bodies = list(pool.map(one, batches))
    for body, texts in zip(bodies, batches, strict=True):
        assert len(body["results"]) == len(texts)
        for results in per_text(body):
            for name in caps:
                assert_conforms(results[name], known[name])
            mood = results["t_json_mood"]
            assert mood["label"] == mood["fields"]["mood"]
            assert 0 < mood["confidence"] <= 1
            assert mood["details"]["layout"] == "shared"
            assert results["t_json_facts"]["label"] is None  # no label_field
            assert results["t_json_facts"]["details"]["layout"] == "own"
    # Whether they shared a window depends on when each slot frees (a window releases its slot
    # once its engine requests are sent); every one ran batched, each in a window it reports.
    assert all(body["window"]["mode"] == "batched" for body in bodies)
    assert all(body["window"]["requests"] >= 1 for body in bodies)


def test_fields_of_a_json_result_reach_its_dependents(client: httpx.Client):
    texts = [fresh("I just got the job, I can't believe it!"), fresh("Please fix the invoice.")]
    body = post(client, texts, ["t_json_reply", "t_json_strength", "t_json_mood"])
    known = schemas()
    for results in per_text(body):
        mood = results["t_json_mood"]
        assert_conforms(mood, known["t_json_mood"])
        # The condition read a field (intensity) and held; the cue rendered mood and intensity.
        assert_conforms(results["t_json_reply"], known["t_json_reply"])
        assert results["t_json_reply"]["label"] == results["t_json_reply"]["fields"]["tone"]
        expected = "strong" if mood["fields"]["intensity"] >= 5 else "mild"
        assert results["t_json_strength"]["label"] == expected


def test_output_cut_short_is_an_error_result_and_the_request_still_answers(
    client: httpx.Client,
):
    texts = [fresh("A long story about a lighthouse keeper."), fresh("Two lines on tea.")]
    caps = ["t_json_stub", "t_json_after_stub", "t_json_facts"]
    for _ in range(2):
        body = post(client, texts, caps)
        assert body["cached"] is False  # an error result is never cached
        for results in per_text(body):
            stub = results["t_json_stub"]
            assert stub["error"] == "truncated"
            assert stub["fields"] is None and stub["label"] is None
            assert stub["details"]["generated_tokens"] == 2
            after = results["t_json_after_stub"]
            assert after["skipped"] is True and "truncated" in after["reason"]
            assert_conforms(results["t_json_facts"], schemas()["t_json_facts"])


def engine_work(client: httpx.Client, engine: str) -> dict[str, int]:
    work: dict[str, int] = client.get("/stats").json()["engines"]["work"][engine]
    return work


def test_a_shared_json_question_reuses_the_texts_prefill(client: httpx.Client):
    words = " ".join(f"item{n} costs {n} euros," for n in range(60))
    text = fresh(f"Price list for the shop: {words} and that is all.")
    post(client, [text], ["t_json_question"])  # the group's question computes the text
    before = engine_work(client, "smollm2")
    (results,) = per_text(post(client, [text], ["t_json_mood"]))
    after = engine_work(client, "smollm2")
    assert results["t_json_mood"]["error"] is None
    assert after["requests"] - before["requests"] == 1
    # The text alone is several hundred tokens; the JSON question found it in the cache.
    assert after["cached_prompt_tokens"] - before["cached_prompt_tokens"] >= 300


def test_the_classifier_answers_with_its_model_config_labels(client: httpx.Client):
    listed = {c["name"]: c for c in client.get("/capabilities").json()["capabilities"]}
    assert [label["name"] for label in listed["t_classifier"]["labels"]] == [
        "alpha",
        "beta",
        "gamma",
    ]
    texts = [fresh(t) for t in ("hello", "a much longer text about trains", "42", "¿qué tal?")]
    for results in per_text(post(client, texts, ["t_classifier"])):
        result = results["t_classifier"]
        probabilities = result["probabilities"]
        assert set(probabilities) == {"alpha", "beta", "gamma"}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(0 < p < 1 for p in probabilities.values())
        assert result["label"] == max(probabilities, key=probabilities.__getitem__)
        assert result["confidence"] == pytest.approx(probabilities[result["label"]])
        assert result["fields"]["t_classifier_1"] == result["label"]
        assert result["fields"]["t_classifier_2"] in {"alpha", "beta", "gamma"} - {result["label"]}


def test_recommendations_answers_on_the_shipped_pack(client: httpx.Client):
    prompts = (
        "hi",
        "Write a Python function that merges two sorted lists.",
        "Summarize this article about climate policy in Europe in three bullet points.",
    )
    body = post(client, [fresh(prompt) for prompt in prompts], ["recommendations"])
    schema = schemas()["recommendations"]
    shipped = yaml.safe_load((REPO / "configs/capabilities/recommendations.yaml").read_text())
    for results in per_text(body):
        result = results["recommendations"]
        assert_conforms(result, schema)
        assert result["label"] == result["fields"]["model_tier"]
        assert 0 < result["confidence"] <= 1
        assert result["details"]["layout"] == shipped["layout"]  # the YAML's, applied


# classifier_labels reads model configs only; no server needed.


def config_with(models: dict[str, ModelConfig], models_dir: Path) -> CapServeConfig:
    return CapServeConfig(models=models, models_dir=models_dir)


def write_model(folder: Path, config: dict[str, Any]) -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_classifier_labels_come_from_id2label_in_index_order(tmp_path: Path):
    id2label = {"1": "b", "10": "k", "0": "a", "2": "c"}
    classifier = write_model(
        tmp_path / "cls",
        {"architectures": ["BertForSequenceClassification"], "id2label": id2label},
    )
    embedder = write_model(tmp_path / "emb", {"architectures": ["BertModel"], "id2label": id2label})
    models = {
        "cls": ModelConfig(source=classifier, runner="pooling"),
        "emb": ModelConfig(source=embedder, runner="pooling"),
        "llm": ModelConfig(source=classifier, runner="generate"),
        # A hub id that is not in the local cache: skipped quietly, nothing downloaded.
        "hub": ModelConfig(source="capserve-tests/no-such-classifier", runner="pooling"),
    }
    assert classifier_labels(config_with(models, tmp_path)) == {"cls": ("a", "b", "c", "k")}
