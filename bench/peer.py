"""The peer pipeline: what a careful platform team builds instead of capserve, on `vllm serve`.

Per request, dependency level by dependency level:
- conditions first, in the client: a text whose `when` does not hold, or one of whose
  dependencies was skipped or in error, gets capserve's skipped result and is asked nothing;
- ONE `/v1/completions` call per LLM carrying every prompt of the level's LLM questions for
  every text that runs them (a list of token-id prompts, `max_tokens=1`, top-20
  log-probabilities keyed `token_id:N`);
- ONE `/v1/completions` call per LLM and llm_json schema (structured outputs apply to every
  prompt of a call) carrying that capability's prompt for every text that runs it, with
  capserve's sampling parameters (the schema constraint, greedy, its `max_tokens`);
- ONE `/v1/embeddings` call per embedding model for the request's texts (sent with the first
  level's completions), label and taxonomy prototypes embedded once at start;
- rules, formulas, regex matches, embedding heads and taxonomy routing computed in the client.

The prompts are capserve's own `own`-layout prompts and answers are read with capserve's own
readers (processors.questions.standalone, bench.peer_local), so results are comparable with
capserve's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bench.peer_local import (
    RegexMatcher,
    formula_result,
    is_taxonomy,
    peer_taxonomy,
    skipped_result,
    taxonomy_results,
    taxonomy_texts,
)
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.json_output import GeneratedText
from processors.questions.processor import PromptTooLongError
from processors.questions.standalone import JsonPrompt
from processors.taxonomy import Taxonomy
from schemas.capability import HEAD_KINDS, QUESTION_KINDS

TOP_LOGPROBS = 20  # vLLM's default max_logprobs
# Kinds that read the request's text embeddings (one /v1/embeddings call per model).
EMBEDDING_KINDS = ("embedding_similarity", *HEAD_KINDS)
TOKEN_KEY_PREFIX = "token_id:"  # vLLM's key for a top-logprob with return_tokens_as_token_ids


class Questions(Protocol):
    """capserve's question prompts and readers without an engine (StandaloneQuestions)."""

    def prompts(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> list[list[int]]: ...

    def read(
        self, capability: str, top_logprobs: Sequence[Mapping[int, float]]
    ) -> CapabilityResult: ...

    def json_prompt(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> JsonPrompt: ...

    def json_sampling(self, capability: str) -> Mapping[str, Any]: ...

    def read_json(
        self, capability: str, prompt: JsonPrompt, generated: GeneratedText
    ) -> CapabilityResult: ...

    def label_texts(self, capability: str) -> list[str]: ...

    def read_embedding(
        self,
        capability: str,
        text_vector: Sequence[float],
        label_vectors: Sequence[Sequence[float]],
    ) -> CapabilityResult: ...

    def has_head(self, capability: str) -> bool: ...

    def read_head(self, capability: str, text_vector: Sequence[float]) -> CapabilityResult: ...

    def read_rule(
        self, capability: str, deps: Mapping[str, CapabilityResult]
    ) -> CapabilityResult: ...


class PeerError(Exception):
    """A peer call failed; the message names the call and the status, never a text."""


def dependency_levels(registry: CapabilityRegistry, requested: Sequence[str]) -> list[list[str]]:
    """The requested capabilities and their dependencies, by depth: level 0 depends on nothing,
    level n on something of level n - 1 (and maybe lower)."""
    depth: dict[str, int] = {}
    for name in registry.resolve(requested):  # dependencies first
        deps = registry.get(name).depends_on
        depth[name] = 1 + max(depth[d] for d in deps) if deps else 0
    levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name, level in depth.items():
        levels[level].append(name)
    return levels


def runnable(
    registry: CapabilityRegistry,
    level: Sequence[str],
    known: Sequence[dict[str, CapabilityResult]],
) -> dict[str, list[int]]:
    """The texts each capability of the level runs on. Each other text gets the skipped result
    capserve gives it, in `known[text]` (its `when` does not hold, or a dependency was skipped
    or in error)."""
    active: dict[str, list[int]] = {}
    for name in level:
        spec = registry.get(name)
        active[name] = []
        for index, results in enumerate(known):
            skipped = skipped_result(spec, {dep: results[dep] for dep in spec.depends_on})
            if skipped is None:
                active[name].append(index)
            else:
                results[name] = skipped
    return active


@dataclass(frozen=True)
class PromptSlot:
    """Where one (capability, text) question's prompts sit in a completions call."""

    capability: str
    text_index: int
    start: int
    stop: int


@dataclass(frozen=True)
class CompletionCall:
    """One `/v1/completions` call: every prompt of a level's questions on one LLM."""

    model: str
    prompts: list[list[int]]
    slots: list[PromptSlot]

    def body(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompts,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": TOP_LOGPROBS,
            "return_tokens_as_token_ids": True,
        }


@dataclass(frozen=True)
class LevelWork:
    """One dependency level of a request, as its completions calls see it: its capabilities,
    the texts, `known[i]` text i's results so far (the dependencies), and the texts each
    capability runs on (`active`; None: all of them)."""

    registry: CapabilityRegistry
    questions: Questions
    capabilities: Sequence[str]
    texts: Sequence[str]
    known: Sequence[Mapping[str, CapabilityResult]]
    active: Mapping[str, Sequence[int]] | None = None

    def asked(
        self, kinds: Sequence[str]
    ) -> Iterator[tuple[CapabilitySpec, int, dict[str, CapabilityResult]]]:
        """(capability, text index, its dependency results) for every text each capability of
        `kinds` with a model runs on."""
        for capability in self.capabilities:
            spec = self.registry.get(capability)
            if spec.kind not in kinds or spec.model is None:
                continue
            indices = range(len(self.texts)) if self.active is None else self.active[capability]
            for index in indices:
                yield spec, index, {dep: self.known[index][dep] for dep in spec.depends_on}


def completion_calls(work: LevelWork) -> list[CompletionCall]:
    """One call per LLM for the level's LLM questions, about every text they run on; no call
    for an LLM with no prompt."""
    by_model: dict[str, tuple[list[list[int]], list[PromptSlot]]] = {}
    for spec, index, deps in work.asked(QUESTION_KINDS):
        assert spec.model is not None
        prompts, slots = by_model.setdefault(spec.model, ([], []))
        mine = work.questions.prompts(spec.name, work.texts[index], deps)
        slots.append(PromptSlot(spec.name, index, len(prompts), len(prompts) + len(mine)))
        prompts.extend(mine)
    return [CompletionCall(model, p, s) for model, (p, s) in by_model.items()]


@dataclass(frozen=True)
class JsonSlot:
    """One (llm_json capability, text) prompt of a JSON call; its choice has the same index."""

    capability: str
    text_index: int
    prompt: JsonPrompt


@dataclass(frozen=True)
class JsonCall:
    """One `/v1/completions` call: every prompt of a level's llm_json capabilities that share
    one LLM and one sampling (schema and max_tokens), for every text that runs them."""

    model: str
    sampling: Mapping[str, Any]  # max_tokens, temperature, logprobs, structured_outputs
    slots: list[JsonSlot]

    def body(self) -> dict[str, Any]:
        prompts = [slot.prompt.ids for slot in self.slots]
        return {"model": self.model, "prompt": prompts, **self.sampling}


def json_calls(work: LevelWork) -> list[JsonCall]:
    """One call per LLM and sampling (schema and max_tokens) for the level's llm_json
    capabilities, about every text they run on."""
    calls: dict[tuple[str, str], JsonCall] = {}
    for spec, index, deps in work.asked(("llm_json",)):
        assert spec.model is not None
        sampling = work.questions.json_sampling(spec.name)
        try:
            prompt = work.questions.json_prompt(spec.name, work.texts[index], deps)
        except PromptTooLongError:
            raise PeerError(f"an llm_json prompt of '{spec.name}' does not fit") from None
        key = (spec.model, json.dumps(sampling, sort_keys=True))
        call = calls.setdefault(key, JsonCall(spec.model, sampling, []))
        call.slots.append(JsonSlot(spec.name, index, prompt))
    return list(calls.values())


def parse_token_key(key: str) -> int:
    """`token_id:123` -> 123 (the key vLLM uses with return_tokens_as_token_ids)."""
    if not key.startswith(TOKEN_KEY_PREFIX):
        raise PeerError(f"unexpected top-logprob key format (expected {TOKEN_KEY_PREFIX}N)")
    try:
        return int(key[len(TOKEN_KEY_PREFIX) :])
    except ValueError:
        raise PeerError("a top-logprob key holds no token id") from None


def first_step_logprobs(choice: Mapping[str, Any]) -> dict[int, float]:
    """A completion choice's first-step top log-probabilities: token id -> log-probability."""
    logprobs = choice.get("logprobs") or {}
    steps = logprobs.get("top_logprobs") or []
    if not steps or steps[0] is None:
        raise PeerError("a completion choice carries no top log-probabilities")
    return {parse_token_key(key): float(value) for key, value in steps[0].items()}


def ordered_choices(model: str, prompts: int, response: Mapping[str, Any]) -> list[Any]:
    """A completions response's choices in prompt order (matched by their index)."""
    choices = sorted(response.get("choices") or [], key=lambda c: int(c["index"]))
    if len(choices) != prompts:
        raise PeerError(
            f"completions on '{model}' returned {len(choices)} choices for {prompts} prompts"
        )
    return choices


def read_completion(
    questions: Questions, call: CompletionCall, response: Mapping[str, Any]
) -> list[tuple[PromptSlot, CapabilityResult]]:
    """Each question's result from the call's response (choices matched by their index)."""
    choices = ordered_choices(call.model, len(call.prompts), response)
    steps = [first_step_logprobs(choice) for choice in choices]
    return [
        (slot, questions.read(slot.capability, steps[slot.start : slot.stop]))
        for slot in call.slots
    ]


def generated_of(choice: Mapping[str, Any]) -> GeneratedText:
    """A completion choice's text, finish reason and sampled tokens' log-probabilities."""
    logprobs = choice.get("logprobs") or {}
    values = logprobs.get("token_logprobs") or []
    return GeneratedText(
        str(choice.get("text") or ""),
        choice.get("finish_reason"),
        tuple(float(value) for value in values if value is not None),
    )


def read_json_completion(
    questions: Questions, call: JsonCall, response: Mapping[str, Any]
) -> list[tuple[JsonSlot, CapabilityResult]]:
    """Each llm_json prompt's result (fields, or capserve's error result) from the response."""
    choices = ordered_choices(call.model, len(call.slots), response)
    return [
        (slot, questions.read_json(slot.capability, slot.prompt, generated_of(choice)))
        for slot, choice in zip(call.slots, choices, strict=True)
    ]


@dataclass
class PeerUsage:
    """What the peer's clients sent, from the servers' `usage` answers."""

    completion_calls: int = 0
    embedding_calls: int = 0
    prompts: int = 0
    prompt_tokens: int = 0
    # vLLM 0.32 reports the cached tokens of the LAST prompt of a list-prompt call only, so
    # this undercounts; computed tokens come from the servers' /metrics instead.
    reported_cached_tokens: int = 0
    generated_tokens: int = 0
    embedding_tokens: int = 0

    def snapshot(self) -> dict[str, float]:
        return {key: float(value) for key, value in vars(self).items()}


# One prompt's place in a completions call, and its result.
Answer = tuple[PromptSlot | JsonSlot, CapabilityResult]


class PeerPipeline:
    def __init__(
        self,
        registry: CapabilityRegistry,
        questions: Questions,
        clients: Mapping[str, httpx.AsyncClient],
    ) -> None:
        self._registry = registry
        self._questions = questions
        self._clients = dict(clients)  # model name -> its server
        self._label_vectors: dict[str, list[list[float]]] = {}
        self._taxonomies: dict[str, Taxonomy] = {}
        self._regex = RegexMatcher()
        self.usage = PeerUsage()

    async def prepare(self) -> None:
        """Embeds every embedding capability's label prototypes (a taxonomy's: every node's),
        once. Refuses to start without every embedding head `capserve train` saves."""
        untrained = [
            spec.name
            for spec in self._registry.specs()
            if spec.kind in HEAD_KINDS and not self._questions.has_head(spec.name)
        ]
        if untrained:
            names = ", ".join(untrained)
            raise PeerError(f"no saved head for {names}: run `capserve train` for each")
        for spec in self._registry.specs():
            if spec.kind != "embedding_similarity" or spec.model is None:
                continue
            if is_taxonomy(spec):
                texts = taxonomy_texts(spec)
                vectors = await self._embed(spec.model, texts)
                self._taxonomies[spec.name] = peer_taxonomy(spec, texts, vectors)
            else:
                texts = self._questions.label_texts(spec.name)
                self._label_vectors[spec.name] = await self._embed(spec.model, texts)

    async def _post(self, model: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            response = await self._clients[model].post(path, json=body)
        except httpx.HTTPError as exc:
            raise PeerError(f"{path} on '{model}' failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise PeerError(f"{path} on '{model}' returned HTTP {response.status_code}")
        data: dict[str, Any] = response.json()
        return data

    async def _embed(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        body = {"model": model, "input": list(texts), "truncate_prompt_tokens": -1}
        data = await self._post(model, "/v1/embeddings", body)
        self.usage.embedding_calls += 1
        self.usage.embedding_tokens += int((data.get("usage") or {}).get("prompt_tokens", 0))
        rows = sorted(data["data"], key=lambda row: int(row["index"]))
        if len(rows) != len(texts):
            raise PeerError(f"embeddings on '{model}' returned {len(rows)} rows for {len(texts)}")
        return [[float(x) for x in row["embedding"]] for row in rows]

    async def _completions(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        data = await self._post(model, "/v1/completions", body)
        usage = data.get("usage") or {}
        self.usage.completion_calls += 1
        self.usage.prompts += len(body["prompt"])
        self.usage.prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.usage.generated_tokens += int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        self.usage.reported_cached_tokens += int(details.get("cached_tokens") or 0)
        return data

    async def _complete(self, call: CompletionCall) -> list[Answer]:
        data = await self._completions(call.model, call.body())
        return [*read_completion(self._questions, call, data)]

    async def _generate(self, call: JsonCall) -> list[Answer]:
        data = await self._completions(call.model, call.body())
        return [*read_json_completion(self._questions, call, data)]

    async def _ask(
        self,
        level: Sequence[str],
        texts: Sequence[str],
        known: Sequence[Mapping[str, CapabilityResult]],
        active: Mapping[str, Sequence[int]],
    ) -> list[Answer]:
        """The level's LLM results: its question call and its JSON calls, all at once."""
        work = LevelWork(self._registry, self._questions, level, texts, known, active)
        answered = await asyncio.gather(
            *map(self._complete, completion_calls(work)),
            *map(self._generate, json_calls(work)),
        )
        return [answer for call in answered for answer in call]

    def _client_side(
        self,
        spec: CapabilitySpec,
        indices: Sequence[int],
        texts: Sequence[str],
        known: Sequence[Mapping[str, CapabilityResult]],
        vectors: Mapping[str, Sequence[Sequence[float]]],
    ) -> list[CapabilityResult]:
        """The results the client computes itself, for the texts that run the capability."""
        name = spec.name
        if spec.kind in EMBEDDING_KINDS and spec.model is not None:
            rows = [vectors[spec.model][index] for index in indices]
            if is_taxonomy(spec):
                return taxonomy_results(spec, self._taxonomies[name], rows)
            if spec.kind == "embedding_similarity":
                label_vectors = self._label_vectors[name]
                return [self._questions.read_embedding(name, row, label_vectors) for row in rows]
            return [self._questions.read_head(name, row) for row in rows]
        deps = [{dep: known[index][dep] for dep in spec.depends_on} for index in indices]
        if spec.kind == "rule":
            return [self._questions.read_rule(name, mine) for mine in deps]
        if spec.kind == "formula":
            return [formula_result(spec, mine) for mine in deps]
        if spec.kind == "regex":
            return [self._regex.result(spec, texts[index]) for index in indices]
        raise PeerError(f"the peer pipeline has no '{spec.kind}' capabilities")

    async def classify(
        self, texts: Sequence[str], capabilities: Sequence[str]
    ) -> list[dict[str, CapabilityResult]]:
        """Each text's results for the requested capabilities, computed level by level."""
        levels = dependency_levels(self._registry, capabilities)
        known: list[dict[str, CapabilityResult]] = [{} for _ in texts]
        embedding_models = sorted(
            {
                spec.model
                for level in levels
                for spec in map(self._registry.get, level)
                if spec.kind in EMBEDDING_KINDS and spec.model is not None
            }
        )
        vectors: dict[str, list[list[float]]] = {}
        for number, level in enumerate(levels):
            active = runnable(self._registry, level, known)
            asking = self._ask(level, texts, known, active)
            if number == 0 and embedding_models:
                embedded, answered = await asyncio.gather(
                    asyncio.gather(*(self._embed(model, texts) for model in embedding_models)),
                    asking,
                )
                vectors = dict(zip(embedding_models, embedded, strict=True))
            else:
                answered = await asking
            for slot, result in answered:
                known[slot.text_index][slot.capability] = result
            for name in level:
                spec = self._registry.get(name)
                if spec.kind.startswith("llm_"):
                    continue
                indices = active[name]
                computed = self._client_side(spec, indices, texts, known, vectors)
                for index, result in zip(indices, computed, strict=True):
                    known[index][name] = result
        return [{name: results[name] for name in capabilities} for results in known]
