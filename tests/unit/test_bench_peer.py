from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pytest

from bench.peer import (
    PeerError,
    PeerPipeline,
    completion_calls,
    dependency_levels,
    first_step_logprobs,
    parse_token_key,
    read_completion,
)
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult, result_from_probabilities
from capabilities.rules import evaluate_rule


class FakeQuestions:
    """Stands in for StandaloneQuestions: prompts that name their question, readers that
    record what they were given."""

    def __init__(self, registry: CapabilityRegistry) -> None:
        self.registry = registry
        self.deps_seen: dict[str, list[set[str]]] = {}
        self.read_steps: dict[str, list[list[dict[int, float]]]] = {}

    def prompts(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> list[list[int]]:
        self.deps_seen.setdefault(capability, []).append(set(deps))
        spec = self.registry.get(capability)
        count = len(spec.labels) if spec.kind == "llm_multilabel" else 1
        return [[len(text), number, len(capability)] for number in range(count)]

    def read(
        self, capability: str, top_logprobs: Sequence[Mapping[int, float]]
    ) -> CapabilityResult:
        self.read_steps.setdefault(capability, []).append([dict(s) for s in top_logprobs])
        spec = self.registry.get(capability)
        if spec.kind == "llm_score":
            return CapabilityResult(capability, "v", None, 1.0, {}, score=0.5)
        if spec.kind == "llm_multilabel":
            return CapabilityResult(capability, "v", None, 1.0, {}, labels=())
        first = spec.label_names[0]
        probabilities = {n: float(n == first) for n in spec.label_names}
        return result_from_probabilities(capability, "v", probabilities)

    def label_texts(self, capability: str) -> list[str]:
        return list(self.registry.get(capability).label_names)

    def read_embedding(
        self,
        capability: str,
        text_vector: Sequence[float],
        label_vectors: Sequence[Sequence[float]],
    ) -> CapabilityResult:
        assert len(label_vectors) == len(self.registry.get(capability).label_names)
        names = self.registry.get(capability).label_names
        probabilities = {n: float(n == names[0]) for n in names}
        return result_from_probabilities(capability, "v", probabilities)

    def read_head(self, capability: str, text_vector: Sequence[float]) -> CapabilityResult:
        names = self.registry.get(capability).label_names
        return result_from_probabilities(capability, "v", {n: float(n == names[0]) for n in names})

    def read_rule(self, capability: str, deps: Mapping[str, CapabilityResult]) -> CapabilityResult:
        return evaluate_rule(self.registry.get(capability), deps)


class FakeVllm:
    """A `vllm serve` stand-in behind httpx.MockTransport that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append((request.url.path, body))
        if request.url.path == "/v1/embeddings":
            rows = [{"index": i, "embedding": [1.0, float(i)]} for i in range(len(body["input"]))]
            return httpx.Response(200, json={"data": rows[::-1], "usage": {"prompt_tokens": 7}})
        prompts = body["prompt"]
        choices = [
            {"index": i, "logprobs": {"top_logprobs": [{"token_id:5": -0.1, "token_id:9": -3.0}]}}
            for i in range(len(prompts))
        ]
        usage = {"prompt_tokens": 10 * len(prompts), "prompt_tokens_details": {"cached_tokens": 4}}
        return httpx.Response(200, json={"choices": choices[::-1], "usage": usage})


def test_levels_follow_dependencies(classic_registry: CapabilityRegistry):
    levels = dependency_levels(classic_registry, ["route", "sentiment", "escalation"])
    assert [sorted(level) for level in levels] == [
        ["sentiment", "task_type"],
        ["complexity", "escalation"],
        ["route"],
    ]


def test_one_call_per_model_carries_every_prompt_as_a_list(classic_registry: CapabilityRegistry):
    questions = FakeQuestions(classic_registry)
    texts = ["short", "a longer text"]
    calls = completion_calls(
        classic_registry, questions, ["sentiment", "safety", "task_type"], texts, [{}, {}]
    )
    assert len(calls) == 1  # every LLM question of the level on smollm2: one call
    (call,) = calls
    body = call.body()
    # sentiment: one prompt per text; safety: one per label (2) per text; no embedding prompt.
    assert len(body["prompt"]) == 2 * (1 + 2)
    assert all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in body["prompt"])
    assert body["max_tokens"] == 1
    assert body["temperature"] == 0.0
    assert body["logprobs"] == 20
    assert body["return_tokens_as_token_ids"] is True
    assert body["model"] == "smollm2"
    safety = [s for s in call.slots if s.capability == "safety"]
    assert [(s.text_index, s.stop - s.start) for s in safety] == [(0, 2), (1, 2)]


def test_token_keys_are_parsed_and_bad_keys_are_refused():
    assert parse_token_key("token_id:123") == 123
    assert parse_token_key("token_id:0") == 0
    with pytest.raises(PeerError, match="key format"):
        parse_token_key("Sentiment")
    with pytest.raises(PeerError, match="no token id"):
        parse_token_key("token_id:abc")
    choice = {"logprobs": {"top_logprobs": [{"token_id:5": -0.5, "token_id:17": -1.25}]}}
    assert first_step_logprobs(choice) == {5: -0.5, 17: -1.25}
    with pytest.raises(PeerError, match="no top log-probabilities"):
        first_step_logprobs({"logprobs": None})


def test_choices_are_matched_by_index_and_counted(classic_registry: CapabilityRegistry):
    questions = FakeQuestions(classic_registry)
    (call,) = completion_calls(classic_registry, questions, ["safety"], ["t"], [{}])
    steps = [{"token_id:1": -0.1}, {"token_id:2": -0.2}]
    choices = [{"index": 1, "logprobs": {"top_logprobs": [steps[1]]}}]
    choices.append({"index": 0, "logprobs": {"top_logprobs": [steps[0]]}})
    read_completion(questions, call, {"choices": choices})
    assert questions.read_steps["safety"] == [[{1: -0.1}, {2: -0.2}]]  # in prompt order
    with pytest.raises(PeerError, match="1 choices for 2 prompts"):
        read_completion(questions, call, {"choices": choices[:1]})


async def test_a_request_costs_one_completions_call_per_level(
    classic_registry: CapabilityRegistry,
):
    fake = FakeVllm()
    questions = FakeQuestions(classic_registry)
    transport = httpx.MockTransport(fake.handler)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://llm") as llm,
        httpx.AsyncClient(transport=transport, base_url="http://emb") as emb,
    ):
        peer = PeerPipeline(classic_registry, questions, {"smollm2": llm, "minilm": emb})
        await peer.prepare()
        prepared = len(fake.calls)
        assert prepared == 2  # the label prototypes of topic and task_type, once each
        results = await peer.classify(["one", "two words"], ["route", "sentiment", "safety"])
    calls = fake.calls[prepared:]
    completions = [body for path, body in calls if path == "/v1/completions"]
    embeddings = [body for path, body in calls if path == "/v1/embeddings"]
    # level 0: sentiment + safety (1 + 2 prompts per text); level 1: complexity; route: a rule.
    assert [len(body["prompt"]) for body in completions] == [6, 2]
    assert len(embeddings) == 1 and embeddings[0]["input"] == ["one", "two words"]
    assert questions.deps_seen["complexity"] == [{"task_type"}, {"task_type"}]
    assert [sorted(r) for r in results] == [["route", "safety", "sentiment"]] * 2
    assert results[0]["route"].label in classic_registry.get("route").label_names
    assert peer.usage.completion_calls == 2
    assert peer.usage.prompts == 8
    assert peer.usage.prompt_tokens == 80
    assert peer.usage.embedding_tokens == 3 * 7  # the prototypes, then the texts


async def test_a_failing_server_gives_a_peer_error_without_text(
    classic_registry: CapabilityRegistry,
):
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "bad"})

    transport = httpx.MockTransport(refuse)
    async with httpx.AsyncClient(transport=transport, base_url="http://llm") as llm:
        peer = PeerPipeline(classic_registry, FakeQuestions(classic_registry), {"smollm2": llm})
        with pytest.raises(PeerError, match="HTTP 400") as caught:
            await peer.classify(["secret text"], ["sentiment"])
    assert "secret" not in str(caught.value)
