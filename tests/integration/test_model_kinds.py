"""The model kinds of the capability language and the shipped pack's seed fields, through HTTP
on the live server: llm_json (schemas switched per request, output cut short as an error
result), classifier (labels from the model config), embedding_head, taxonomies, calibrated
centroids, and one embedding per text for every embedding capability of a window.

Texts carry a fresh tag, so the result cache cannot answer and each request is computed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import httpx
import jsonschema
import yaml

from tests.integration.live_server import LiveServer

NVIDIA_TASK_TYPES = {
    "Open QA",
    "Closed QA",
    "Summarization",
    "Text Generation",
    "Code Generation",
    "Chatbot",
    "Classification",
    "Rewrite",
    "Brainstorming",
    "Extraction",
    "Other",
}
SEED_COMPLEXITY_FIELDS = {
    "creativity_scope",
    "reasoning",
    "contextual_knowledge",
    "domain_knowledge",
    "constraint_ct",
    "no_label_reason",
    "number_of_few_shots",
    "prompt_complexity_score",
}
NVIDIA_WEIGHTS = {
    "creativity_scope": 0.35,
    "reasoning": 0.25,
    "constraint_ct": 0.15,
    "domain_knowledge": 0.15,
    "contextual_knowledge": 0.05,
    "number_of_few_shots": 0.05,
}


def tagged(text: str) -> str:
    return f"{text} (ref {uuid4().hex[:10]})"


def classify(client: httpx.Client, texts: list[str], caps: list[str]) -> list[dict[str, Any]]:
    response = client.post("/classify", json={"texts": texts, "capabilities": caps})
    assert response.status_code == 200, response.text
    return [item["results"] for item in response.json()["results"]]


def schema_of(server: LiveServer, name: str) -> dict[str, Any]:
    for path in server.capabilities_dir.glob("*.yaml"):
        loaded = yaml.safe_load(path.read_text())
        for entry in loaded if isinstance(loaded, list) else [loaded]:
            if entry["name"] == name:
                schema: dict[str, Any] = entry["output_schema"]
                return schema
    raise KeyError(name)


def test_the_pack_answers_with_seed_000_fields(client: httpx.Client, server: LiveServer):
    texts = [
        tagged("Write a Python function that merges two sorted lists, with unit tests."),
        tagged(
            "Write a short poem about autumn leaves for my grandmother, mail me at ann@example.org"
        ),
    ]
    caps = ["task_type", "complexity", "route", "recommendations", "alerts", "pii", "topic"]
    results = classify(client, texts, caps)
    recommendations_schema = schema_of(server, "recommendations")
    for per in results:
        task = per["task_type"]["fields"]
        assert task["task_type_1"] in NVIDIA_TASK_TYPES
        assert task["task_type_1"] == per["task_type"]["label"]
        assert task["task_type_2"] in NVIDIA_TASK_TYPES | {"NA"}
        assert 0 < task["task_type_prob"] <= 1
        fields = per["complexity"]["fields"]
        assert set(fields) == SEED_COMPLEXITY_FIELDS
        expected = sum(w * fields[name] for name, w in NVIDIA_WEIGHTS.items())
        assert abs(fields["prompt_complexity_score"] - min(1.0, expected)) < 1e-6
        assert abs(per["complexity"]["score"] - fields["prompt_complexity_score"]) < 1e-5
        assert isinstance(fields["number_of_few_shots"], int)
        assert per["route"]["label"] in ("fast", "slow")
        assert per["route"]["details"]["tier"] in ("small", "medium", "large")
        recommendation = per["recommendations"]
        assert recommendation["error"] is None, recommendation
        jsonschema.validate(recommendation["fields"], recommendations_schema)
        assert recommendation["label"] == recommendation["fields"]["model_tier"]
        assert len(per["topic"]["path"]) == 2
        assert per["topic"]["label"] == per["topic"]["path"][-1]
    assert results[0]["task_type"]["label"] == "Code Generation"
    assert results[1]["pii"]["labels"] == ["email"]
    (match,) = results[1]["pii"]["fields"]["matches"]
    assert texts[1][match["start"] : match["end"]] == "ann@example.org"
    assert results[1]["alerts"]["label"] in ("pii", "pii_and_unsafe")


def test_two_json_schemas_share_the_engine_in_one_window(client: httpx.Client, server: LiveServer):
    caps = ["t_json_tier", "t_json_words"]
    schemas = {name: schema_of(server, name) for name in caps}
    texts = [tagged(t) for t in ("Prove Fermat's last theorem.", "Say hello.", "Sort a list.")]

    def one(text: str) -> list[dict[str, Any]]:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            return classify(c, [text], caps)

    with ThreadPoolExecutor(3) as pool:  # concurrent requests: they share windows
        answers = [per for batch in pool.map(one, texts) for per in batch]
    answers += classify(client, [tagged("Translate a menu into French.")], caps)
    valid = {name: 0 for name in caps}
    for per in answers:
        for name in caps:
            result = per[name]
            if result["error"] is not None:
                # The 135M model sometimes pads a string to max_tokens (the texts carry a random
                # tag): an explicit error result, never a wrong schema or a failed window.
                assert result["error"] == "truncated", result
                continue
            jsonschema.validate(result["fields"], schemas[name])
            valid[name] += 1
            if name == "t_json_tier":
                assert result["label"] in ("small", "large")
                assert 0 < result["confidence"] <= 1
    # Both schemas were switched to and followed within the shared windows.
    assert all(count >= len(answers) - 1 for count in valid.values()), valid


def test_output_cut_short_is_an_error_result_and_the_request_still_answers(client: httpx.Client):
    (per,) = classify(
        client,
        [tagged("A long story about a lighthouse keeper.")],
        ["t_json_cut", "t_json_tier", "sentiment"],
    )
    assert per["t_json_cut"]["error"] == "truncated"
    assert per["t_json_cut"]["fields"] is None and per["t_json_cut"]["label"] is None
    assert per["t_json_tier"]["error"] is None
    assert per["sentiment"]["label"] in ("positive", "negative", "neutral")


def test_a_classifier_has_its_model_config_labels(client: httpx.Client):
    listed = {c["name"]: c for c in client.get("/capabilities").json()["capabilities"]}
    assert [label["name"] for label in listed["t_intent"]["labels"]] == ["alpha", "beta", "gamma"]
    results = classify(client, [tagged("first"), tagged("second text")], ["t_intent"])
    for per in results:
        result = per["t_intent"]
        assert result["label"] in ("alpha", "beta", "gamma")
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
        assert result["confidence"] == max(result["probabilities"].values())


def test_head_taxonomy_and_calibrated_centroids(client: httpx.Client):
    texts = [tagged("Where is the nearest train station?"), tagged("My kitten purrs all night.")]
    question, kitten = classify(client, texts, ["t_head", "t_tree", "t_centroid"])
    assert question["t_head"]["label"] == "question"
    assert question["t_head"]["details"]["head"] == "logistic_regression"
    assert kitten["t_tree"]["path"] == ["animals", "cats"]
    levels = kitten["t_tree"]["details"]["levels"]
    assert [level["label"] for level in levels] == ["animals", "cats"]
    product = levels[0]["confidence"] * levels[1]["confidence"]
    assert abs(kitten["t_tree"]["confidence"] - product) < 1e-4
    assert question["t_centroid"]["details"]["calibrated"] is True


def minilm_requests(client: httpx.Client) -> int:
    """The embedding engine's request count, once nothing runs in the background."""
    previous = -1
    while True:
        count = int(client.get("/stats").json()["engines"]["work"]["minilm"]["requests"])
        if count == previous:
            return count
        previous = count
        time.sleep(0.5)


def test_one_embedding_per_text_for_every_embedding_capability(client: httpx.Client):
    caps = ["t_head", "t_tree", "t_centroid", "task_type", "sentiment", "topic", "reasoning"]
    texts = [tagged("Plan a week in Japan."), tagged("Debug my React app.")]
    before = minilm_requests(client)
    classify(client, texts, caps)
    assert minilm_requests(client) - before == len(texts)
