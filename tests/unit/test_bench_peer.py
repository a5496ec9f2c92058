from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from bench.peer import (
    LevelWork,
    PeerError,
    PeerPipeline,
    completion_calls,
    dependency_levels,
    first_step_logprobs,
    parse_token_key,
    read_completion,
)
from capabilities.formulas import evaluate_formula
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult, result_from_probabilities
from capabilities.rules import evaluate_rule
from processors.base import ProcessorInput, WindowContext
from processors.embedding_similarity import EmbeddingSimilarityProcessor
from processors.json_output import (
    TRUNCATED,
    GeneratedText,
    JsonOutputProcessor,
    read_json_output,
    structured_outputs,
)
from processors.questions.answers import encode
from processors.questions.standalone import JsonPrompt, StandaloneQuestions, json_question
from processors.regex import RegexProcessor
from processors.taxonomy import TaxonomyProcessor
from tests.integration.session_models import prepared_model_folder
from tests.unit.fakes import SHIPPED_RUNNERS
from tests.unit.test_embedding_kinds import TREE, TREE_VECTORS
from tests.unit.test_embedding_kinds import FakeEngine as EmbeddingEngine
from tests.unit.test_json_output import SCHEMA
from tests.unit.test_json_output import FakeEngine as JsonEngine


class FakeQuestions:
    """Stands in for StandaloneQuestions: prompts that name their question, readers that
    record what they were given."""

    def __init__(self, registry: CapabilityRegistry) -> None:
        self.registry = registry
        self.deps_seen: dict[str, list[set[str]]] = {}
        self.read_steps: dict[str, list[list[dict[int, float]]]] = {}
        self.untrained: set[str] = set()  # embedding heads without a saved head

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

    def json_prompt(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> JsonPrompt:
        self.deps_seen.setdefault(capability, []).append(set(deps))
        return JsonPrompt([len(text), len(capability)], truncated=False)

    def json_sampling(self, capability: str) -> dict[str, Any]:
        definition = self.registry.get(capability).definition
        structured = {"json": definition.output_schema}
        return {
            "max_tokens": definition.max_tokens,
            "temperature": 0.0,
            "structured_outputs": structured,
        }

    def read_json(
        self, capability: str, prompt: JsonPrompt, generated: GeneratedText
    ) -> CapabilityResult:
        spec = self.registry.get(capability)
        schema = spec.definition.output_schema or {}
        validator = jsonschema.validators.validator_for(schema)(schema)
        return read_json_output(spec, validator, generated)

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

    def has_head(self, capability: str) -> bool:
        return capability not in self.untrained

    def read_head(self, capability: str, text_vector: Sequence[float]) -> CapabilityResult:
        names = self.registry.get(capability).label_names
        return result_from_probabilities(capability, "v", {n: float(n == names[0]) for n in names})

    def read_rule(self, capability: str, deps: Mapping[str, CapabilityResult]) -> CapabilityResult:
        return evaluate_rule(self.registry.get(capability), deps)


# A JSON answer for a prompt: (text, finish reason).
JsonAnswer = Callable[[list[int]], tuple[str, str]]


def valid_json(prompt: list[int]) -> tuple[str, str]:
    return '{"tier": "large", "hints": ["be exact"]}', "stop"


class FakeVllm:
    """A `vllm serve` stand-in behind httpx.MockTransport that records every call. Embeds a text
    as `vectors[text]` when given, else as [1, its index]; answers a structured-outputs call's
    prompts with `json_answer`."""

    def __init__(
        self,
        vectors: Mapping[str, list[float]] | None = None,
        json_answer: JsonAnswer = valid_json,
    ) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.vectors = dict(vectors or {})
        self.json_answer = json_answer

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append((request.url.path, body))
        if request.url.path == "/v1/embeddings":
            rows = [
                {"index": i, "embedding": self.vectors.get(text, [1.0, float(i)])}
                for i, text in enumerate(body["input"])
            ]
            return httpx.Response(200, json={"data": rows[::-1], "usage": {"prompt_tokens": 7}})
        prompts = body["prompt"]
        if "structured_outputs" in body:
            return self.generate(prompts)
        choices = [
            {"index": i, "logprobs": {"top_logprobs": [{"token_id:5": -0.1, "token_id:9": -3.0}]}}
            for i in range(len(prompts))
        ]
        usage = {"prompt_tokens": 10 * len(prompts), "prompt_tokens_details": {"cached_tokens": 4}}
        return httpx.Response(200, json={"choices": choices[::-1], "usage": usage})

    def generate(self, prompts: list[list[int]]) -> httpx.Response:
        choices = []
        for i, prompt in enumerate(prompts):
            text, finish = self.json_answer(prompt)
            logprobs = {"token_logprobs": [math.log(0.5), math.log(1.0)], "top_logprobs": []}
            choices.append(
                {"index": i, "text": text, "finish_reason": finish, "logprobs": logprobs}
            )
        usage = {"prompt_tokens": 10 * len(prompts), "completion_tokens": 2 * len(prompts)}
        return httpx.Response(200, json={"choices": choices[::-1], "usage": usage})


async def classify(
    registry: CapabilityRegistry,
    fake: FakeVllm,
    texts: list[str],
    capabilities: list[str],
    questions: FakeQuestions | None = None,
) -> tuple[list[dict[str, CapabilityResult]], PeerPipeline]:
    """The peer's results on a fake server (prepared first); `fake.calls` keeps what it sent."""
    transport = httpx.MockTransport(fake.handler)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://llm") as llm,
        httpx.AsyncClient(transport=transport, base_url="http://emb") as emb,
    ):
        peer = PeerPipeline(
            registry, questions or FakeQuestions(registry), {"smollm2": llm, "minilm": emb}
        )
        await peer.prepare()
        return await peer.classify(texts, capabilities), peer


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
    level = ["sentiment", "safety", "task_type"]
    calls = completion_calls(LevelWork(classic_registry, questions, level, texts, [{}, {}]))
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
    (call,) = completion_calls(LevelWork(classic_registry, questions, ["safety"], ["t"], [{}]))
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


async def test_the_peer_refuses_to_start_without_a_saved_head(shipped_registry):
    questions = FakeQuestions(shipped_registry)
    questions.untrained = {"sentiment", "reasoning"}
    peer = PeerPipeline(shipped_registry, questions, {})
    with pytest.raises(PeerError, match=r"no saved head for .*: run `capserve train`") as caught:
        await peer.prepare()  # before any call: the peer has no server here
    named = str(caught.value).removeprefix("no saved head for ").split(":")[0].split(", ")
    assert sorted(named) == ["reasoning", "sentiment"]


# --- the new pack's kinds -----------------------------------------------------------------------

LOCAL_PACK: list[dict[str, Any]] = [
    {"name": "pii", "kind": "regex", "labels": [{"name": "email", "builtin": "email"}]},
    {"name": "shots", "kind": "regex", "labels": [{"name": "example", "pattern": "(?m)^A: \\S"}]},
    {
        "name": "risk",
        "kind": "formula",
        "depends_on": ["pii", "shots"],
        "formula": {"terms": {"pii.count": 0.5, "shots.count": 0.25}, "clip": [0.0, 1.0]},
    },
    # Asked only about texts without personal data.
    {
        "name": "mood",
        "kind": "llm_choice",
        "model": "smollm2",
        "labels": ["calm", "angry"],
        "depends_on": ["pii"],
        "when": "pii.count == 0",
        "prompt": {"instructions": "Say the mood.", "cue": "Question: mood\n"},
    },
    {
        "name": "reply",
        "kind": "rule",
        "depends_on": ["mood"],
        "labels": ["soothe", "none"],
        "rule": {
            "cases": [{"when": "mood.label == 'angry'", "label": "soothe"}],
            "default": "none",
        },
    },
    {
        "name": "advice",
        "kind": "llm_json",
        "model": "smollm2",
        "layout": "own",
        "depends_on": ["mood"],
        "output_schema": SCHEMA,
        "label_field": "tier",
        "max_tokens": 40,
        "prompt": {"instructions": "Advise, as JSON.", "cue": "Question: advice\n"},
    },
    {
        "name": "check",
        "kind": "llm_json",
        "model": "smollm2",
        "layout": "own",
        "depends_on": ["mood"],
        "output_schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
        "max_tokens": 8,
        "prompt": {"instructions": "Check, as JSON.", "cue": "Question: check\n"},
    },
    {
        "name": "escalate",
        "kind": "rule",
        "depends_on": ["advice"],
        "labels": ["yes", "no"],
        "rule": {"cases": [{"when": "advice.label == 'large'", "label": "yes"}], "default": "no"},
    },
    {"name": "topic", "kind": "embedding_similarity", "model": "minilm", "labels": TREE},
]
MAIL = "write to ann@example.com\nA: done"


@pytest.fixture
def pack(write_capabilities: Callable[..., Path]) -> CapabilityRegistry:
    return CapabilityRegistry.from_directory(write_capabilities(*LOCAL_PACK), SHIPPED_RUNNERS)


def completions_sent(fake: FakeVllm) -> list[dict[str, Any]]:
    return [body for path, body in fake.calls if path == "/v1/completions"]


async def test_regex_and_formula_are_computed_with_no_server_call(pack: CapabilityRegistry):
    fake = FakeVllm()
    texts = [MAIL, "no personal data"]
    results, _ = await classify(pack, fake, texts, ["risk", "pii", "shots"])
    assert [path for path, _ in fake.calls] == ["/v1/embeddings"]  # the taxonomy, at prepare
    # capserve's own results: its regex processor, then its formula on them.
    inputs = [ProcessorInput(text, {}) for text in texts]
    for name in ("pii", "shots"):
        expected = await RegexProcessor().run(pack.get(name), inputs, WindowContext())
        assert [r[name] for r in results] == list(expected)
    assert results[0]["pii"].fields == {
        "count": 1,
        "matches": [{"label": "email", "start": 9, "end": 24}],
    }
    for mine in results:
        deps = {"pii": mine["pii"], "shots": mine["shots"]}
        assert mine["risk"] == evaluate_formula(pack.get("risk"), deps)
    assert results[0]["risk"].score == 0.75 and results[1]["risk"].score == 0.0


async def test_a_condition_skips_texts_and_their_dependents_with_no_prompt_sent(
    pack: CapabilityRegistry,
):
    fake = FakeVllm()
    questions = FakeQuestions(pack)
    results, _ = await classify(pack, fake, [MAIL, "calm words"], ["reply"], questions)
    (call,) = completions_sent(fake)
    assert len(call["prompt"]) == 1  # mood about the text without personal data only
    assert questions.deps_seen["mood"] == [{"pii"}]
    mailed, calm = results
    assert mailed["reply"].skipped == "dependency 'mood' was skipped"
    assert mailed["reply"].label is None and not mailed["reply"].cacheable
    assert calm["reply"].answered and calm["reply"].label == "none"
    fake = FakeVllm()
    only_mail, _ = await classify(pack, fake, [MAIL], ["mood"])
    assert only_mail[0]["mood"].skipped == "condition not met: pii.count == 0"
    assert only_mail[0]["mood"].cacheable  # a skip by the capability's own condition
    assert completions_sent(fake) == []  # nothing to ask: no call at all


def truncated_for_long_texts(prompt: list[int]) -> tuple[str, str]:
    # FakeQuestions' JSON prompts start with the text's length.
    return ('{"tier": "la', "length") if prompt[0] > 20 else valid_json(prompt)


async def test_llm_json_sends_one_call_per_schema_and_reads_fields_or_an_error(
    pack: CapabilityRegistry,
):
    fake = FakeVllm(json_answer=truncated_for_long_texts)
    texts = [MAIL, "calm words", "calm words, but a longer text"]
    results, peer = await classify(pack, fake, texts, ["advice", "check", "escalate"])
    mood, advice_call, check_call = completions_sent(fake)
    assert len(mood["prompt"]) == 2 and mood["max_tokens"] == 1
    # One call per schema, each with the prompts of the texts whose mood was asked.
    assert advice_call["prompt"] == [[10, 6], [29, 6]]
    assert advice_call["max_tokens"] == 40 and advice_call["temperature"] == 0.0
    assert advice_call["structured_outputs"] == {"json": SCHEMA}
    assert check_call["max_tokens"] == 8
    assert check_call["structured_outputs"] == {"json": pack.get("check").definition.output_schema}
    mailed, answered, cut = results
    assert mailed["advice"].skipped == "dependency 'mood' was skipped"
    assert mailed["escalate"].skipped == "dependency 'advice' was skipped"
    assert answered["advice"].fields == {"tier": "large", "hints": ["be exact"]}
    assert answered["advice"].label == "large"
    assert answered["advice"].confidence == pytest.approx(0.75)  # mean token probability
    assert answered["escalate"].label == "yes"
    assert cut["advice"].error == TRUNCATED and cut["advice"].fields is None
    assert not cut["advice"].answered and not cut["advice"].cacheable
    assert cut["escalate"].skipped == "dependency 'advice' gave no usable output (truncated)"
    assert peer.usage.completion_calls == 3
    assert peer.usage.generated_tokens == 2 * 4


async def test_a_taxonomy_routes_in_the_client_like_capserve(pack: CapabilityRegistry):
    fake = FakeVllm(vectors=TREE_VECTORS)
    texts = ["a trail ride", "a kitten"]
    results, _ = await classify(pack, fake, texts, ["topic"])
    (prototypes, embedded) = [body for path, body in fake.calls if path == "/v1/embeddings"]
    assert sorted(prototypes["input"]) == sorted(set(prototypes["input"]))  # each text once
    assert embedded["input"] == texts
    assert completions_sent(fake) == []
    spec = pack.get("topic")
    engine = EmbeddingEngine(TREE_VECTORS)
    processor = TaxonomyProcessor(EmbeddingSimilarityProcessor(engine))  # type: ignore[arg-type]
    inputs = [ProcessorInput(text, {}) for text in texts]
    expected = await processor.run(spec, inputs, WindowContext())
    assert [r["topic"] for r in results] == list(expected)
    assert results[0]["topic"].path == ("vehicle", "bike", "mountain_bike")
    assert results[1]["topic"].label == "cat"


# --- llm_json without an engine, as capserve asks it --------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(prepared_model_folder("smollm2"))


async def test_standalone_json_prompts_sampling_and_reading_are_capserves(
    pack: CapabilityRegistry, tokenizer: Any
):
    spec = pack.get("advice")
    answer = '{"tier": "small", "hints": []}'
    engine = JsonEngine(tokenizer, {"alpha": answer})
    mood = {"mood": result_from_probabilities("mood", "v", {"calm": 0.9, "angry": 0.1})}
    texts = ["alpha text", "alpha " * 3000]  # the second is cut to leave room for the answer
    processor = JsonOutputProcessor(engine)  # type: ignore[arg-type]
    inputs = [ProcessorInput(text, mood) for text in texts]
    expected = await processor.run(spec, inputs, WindowContext())
    setup = json_question(tokenizer, spec, engine.max_model_len, engine.block_size)
    questions = StandaloneQuestions(pack, {}, {"advice": setup})
    prompts = [questions.json_prompt("advice", text, mood) for text in texts]
    assert [p.ids for p in prompts] == engine.prompts
    assert [p.truncated for p in prompts] == [False, True]
    sampling = questions.json_sampling("advice")
    grammar = structured_outputs(spec.definition.output_schema or {}).grammar
    assert sampling == {
        "max_tokens": 40,
        "temperature": 0.0,
        "logprobs": 0,
        "structured_outputs": {"grammar": grammar},
    }
    json.dumps(sampling)  # a request body
    tokens = len(encode(tokenizer, answer))
    generated = GeneratedText(answer, "stop", (math.log(0.5),) * tokens)
    assert [questions.read_json("advice", p, generated) for p in prompts] == list(expected)
    assert expected[1].details["truncated"] is True  # type: ignore[union-attr]
