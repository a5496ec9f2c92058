"""capserve's prompts and answer readers outside the server, with no engine: for a client that
asks another server (the `vllm serve` pipeline of the benchmark) exactly what capserve would ask
in the `own` layout, and reads its answers the way capserve does.

The prompts are token ids, so both sides see the same tokens; answers are read from each
prompt's first-step log-probabilities (token id -> log-probability). No calibration: a client
of a plain completions server has no prior to divide out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from capabilities.outputs import single_label_result
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.rules import evaluate_rule
from capabilities.spec import CapabilitySpec
from processors.embedding_similarity import (
    label_prototypes,
    similarity_probabilities,
    unit_vector,
)
from processors.head_training import Head, load_saved_head
from processors.model_store import resolve_model_path
from processors.questions.answers import (
    AnswerTokens,
    answer_tokens,
    encode,
    read_choice,
    read_multilabel,
    read_score,
)
from processors.questions.layout import QuestionLayout, build_layout, cues
from schemas.config import CapServeConfig


@dataclass(frozen=True)
class _Question:
    spec: CapabilitySpec
    layout: QuestionLayout
    answers: AnswerTokens
    tokenizer: object


class StandaloneQuestions:
    def __init__(self, registry: CapabilityRegistry, questions: Mapping[str, _Question]) -> None:
        self._registry = registry
        self._questions = dict(questions)
        self._heads: dict[str, Head] = {}

    @classmethod
    def from_config(
        cls, config: CapServeConfig, registry: CapabilityRegistry
    ) -> StandaloneQuestions:
        """Loads each LLM's tokenizer from its prepared folder; starts no engine. The registry
        should be loaded with `prompting.layout_override: own` (the layout a client of a plain
        completions server can use); questions in another layout are asked as `own` anyway."""
        from transformers import AutoTokenizer

        assert config.models_dir is not None
        tokenizers: dict[str, object] = {}
        questions: dict[str, _Question] = {}
        for spec in registry.specs():
            if not spec.is_question or spec.model is None:
                continue
            model = config.models[spec.model]
            if spec.model not in tokenizers:
                path = resolve_model_path(spec.model, model.source, config.models_dir)
                tokenizers[spec.model] = AutoTokenizer.from_pretrained(path)
            tokenizer = tokenizers[spec.model]
            own = spec if spec.group is None else _as_own(spec)
            answers = answer_tokens(tokenizer, own)
            longest = answers.longest_answer + 2 if answers.method == "choice" else 1
            layout = build_layout(
                tokenizer, own, model.max_model_len or 2048, model.block_size or 16, longest
            )
            questions[spec.name] = _Question(own, layout, answers, tokenizer)
        return cls(registry, questions)

    def kind(self, capability: str) -> str:
        return self._registry.get(capability).kind

    def prompts(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> list[list[int]]:
        """The question's engine prompts as token ids: one, or one per label (multilabel)."""
        question = self._questions[capability]
        text_ids = question.tokenizer.encode(  # type: ignore[attr-defined]
            text, add_special_tokens=False, split_special_tokens=True
        )
        shared, _ = question.layout.shared_ids(text_ids)
        return [
            [*shared, *encode(question.tokenizer, question.layout.question_text(cue))]
            for cue in cues(question.spec, deps)
        ]

    def read(
        self, capability: str, top_logprobs: Sequence[Mapping[int, float]]
    ) -> CapabilityResult:
        """The result from each prompt's first-step log-probabilities, in prompt order."""
        question = self._questions[capability]
        spec, answers = question.spec, question.answers
        if spec.kind == "llm_multilabel":
            return read_multilabel(spec, answers, top_logprobs)
        (step,) = top_logprobs
        if spec.kind == "llm_score":
            return read_score(spec, answers, step)
        return read_choice(spec, answers, step)

    def label_texts(self, capability: str) -> list[str]:
        return [text for _, text in label_prototypes(self._registry.get(capability))]

    def read_embedding(
        self,
        capability: str,
        text_vector: Sequence[float],
        label_vectors: Sequence[Sequence[float]],
    ) -> CapabilityResult:
        spec = self._registry.get(capability)
        owners = [label for label, _ in label_prototypes(spec)]
        prototypes = np.stack([unit_vector(v) for v in label_vectors])
        similarities = unit_vector(text_vector)[np.newaxis, :] @ prototypes.T
        row = similarity_probabilities(spec, owners, similarities)[0]
        probabilities = {name: float(p) for name, p in zip(spec.label_names, row, strict=True)}
        return single_label_result(spec, probabilities)

    def read_head(self, capability: str, text_vector: Sequence[float]) -> CapabilityResult:
        """An embedding_head's result from the head `capserve train` saved for its version."""
        spec = self._registry.get(capability)
        if capability not in self._heads:
            head = load_saved_head(spec)
            if head is None:
                raise LookupError(f"'{capability}' has no saved head: run `capserve train`")
            self._heads[capability] = head
        head = self._heads[capability]
        row = head.probabilities(unit_vector(text_vector)[np.newaxis, :])[0]
        probabilities = {name: float(p) for name, p in zip(head.classes, row, strict=True)}
        return single_label_result(spec, probabilities)

    def read_rule(self, capability: str, deps: Mapping[str, CapabilityResult]) -> CapabilityResult:
        return evaluate_rule(self._registry.get(capability), deps)


def _as_own(spec: CapabilitySpec) -> CapabilitySpec:
    return dataclasses.replace(spec, layout="own", group=None)
