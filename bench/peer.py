"""The peer pipeline: what a careful platform team builds instead of capserve, on `vllm serve`.

Per request, dependency level by dependency level: ONE `/v1/completions` call per LLM carrying
every prompt of the level's LLM questions for every text of the request (a list of token-id
prompts, `max_tokens=1`, top-20 log-probabilities keyed `token_id:N`), ONE `/v1/embeddings` call
per embedding model for the request's texts (sent with the first level's completions), label
prototype embeddings computed once at start, and rules computed in the client.

The prompts are capserve's own `own`-layout prompts and answers are read with capserve's own
readers (processors.questions.standalone), so labels are comparable with capserve's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult

TOP_LOGPROBS = 20  # vLLM's default max_logprobs
# Kinds that read the request's text embeddings (one /v1/embeddings call per model).
EMBEDDING_KINDS = ("embedding_similarity", "embedding_head")
TOKEN_KEY_PREFIX = "token_id:"  # vLLM's key for a top-logprob with return_tokens_as_token_ids


class Questions(Protocol):
    """capserve's question prompts and readers without an engine (StandaloneQuestions)."""

    def prompts(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> list[list[int]]: ...

    def read(
        self, capability: str, top_logprobs: Sequence[Mapping[int, float]]
    ) -> CapabilityResult: ...

    def label_texts(self, capability: str) -> list[str]: ...

    def read_embedding(
        self,
        capability: str,
        text_vector: Sequence[float],
        label_vectors: Sequence[Sequence[float]],
    ) -> CapabilityResult: ...

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


def completion_calls(
    registry: CapabilityRegistry,
    questions: Questions,
    capabilities: Sequence[str],
    texts: Sequence[str],
    known: Sequence[Mapping[str, CapabilityResult]],
) -> list[CompletionCall]:
    """One call per LLM for the LLM questions among `capabilities`, about every text;
    `known[i]` holds text i's results so far (the questions' dependencies)."""
    by_model: dict[str, tuple[list[list[int]], list[PromptSlot]]] = {}
    for capability in capabilities:
        spec = registry.get(capability)
        if not spec.kind.startswith("llm_") or spec.model is None:
            continue
        prompts, slots = by_model.setdefault(spec.model, ([], []))
        for index, text in enumerate(texts):
            deps = {dep: known[index][dep] for dep in spec.depends_on}
            mine = questions.prompts(capability, text, deps)
            slots.append(PromptSlot(capability, index, len(prompts), len(prompts) + len(mine)))
            prompts.extend(mine)
    return [CompletionCall(model, p, s) for model, (p, s) in by_model.items()]


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


def read_completion(
    questions: Questions, call: CompletionCall, response: Mapping[str, Any]
) -> list[tuple[PromptSlot, CapabilityResult]]:
    """Each question's result from the call's response (choices matched by their index)."""
    choices = sorted(response.get("choices") or [], key=lambda c: int(c["index"]))
    if len(choices) != len(call.prompts):
        raise PeerError(
            f"completions on '{call.model}' returned {len(choices)} choices "
            f"for {len(call.prompts)} prompts"
        )
    steps = [first_step_logprobs(choice) for choice in choices]
    return [
        (slot, questions.read(slot.capability, steps[slot.start : slot.stop]))
        for slot in call.slots
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
    embedding_tokens: int = 0

    def snapshot(self) -> dict[str, float]:
        return {key: float(value) for key, value in vars(self).items()}


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
        self.usage = PeerUsage()

    async def prepare(self) -> None:
        """Embeds every embedding capability's label prototypes, once."""
        for spec in self._registry.specs():
            if spec.kind == "embedding_similarity" and spec.model is not None:
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

    async def _complete(self, call: CompletionCall) -> list[tuple[PromptSlot, CapabilityResult]]:
        data = await self._post(call.model, "/v1/completions", call.body())
        usage = data.get("usage") or {}
        self.usage.completion_calls += 1
        self.usage.prompts += len(call.prompts)
        self.usage.prompt_tokens += int(usage.get("prompt_tokens", 0))
        details = usage.get("prompt_tokens_details") or {}
        self.usage.reported_cached_tokens += int(details.get("cached_tokens") or 0)
        return read_completion(self._questions, call, data)

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
            calls = completion_calls(self._registry, self._questions, level, texts, known)
            completions = asyncio.gather(*(self._complete(call) for call in calls))
            if number == 0 and embedding_models:
                embedded, answered = await asyncio.gather(
                    asyncio.gather(*(self._embed(model, texts) for model in embedding_models)),
                    completions,
                )
                vectors = dict(zip(embedding_models, embedded, strict=True))
            else:
                answered = await completions
            for slot, result in (pair for call in answered for pair in call):
                known[slot.text_index][slot.capability] = result
            for name in level:
                spec = self._registry.get(name)
                for index in range(len(texts)):
                    if spec.kind == "embedding_similarity" and spec.model is not None:
                        known[index][name] = self._questions.read_embedding(
                            name, vectors[spec.model][index], self._label_vectors[name]
                        )
                    elif spec.kind == "embedding_head" and spec.model is not None:
                        known[index][name] = self._questions.read_head(
                            name, vectors[spec.model][index]
                        )
                    elif spec.kind == "rule":
                        deps = {dep: known[index][dep] for dep in spec.depends_on}
                        known[index][name] = self._questions.read_rule(name, deps)
                    elif not spec.kind.startswith("llm_"):
                        raise PeerError(f"the peer pipeline has no '{spec.kind}' capabilities")
        return [{name: results[name] for name in capabilities} for results in known]
