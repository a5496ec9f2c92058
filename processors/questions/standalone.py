"""capserve's prompts and answer readers outside the server, with no engine: for a client that
asks another server (the `vllm serve` pipeline of the benchmark) exactly what capserve would ask
in the `own` layout, and reads its answers the way capserve does.

The prompts are token ids, so both sides see the same tokens; answers are read from each
prompt's first-step log-probabilities (token id -> log-probability). No calibration: a client
of a plain completions server has no prior to divide out.

`llm_json` is asked the same way: capserve's prompt (fitted to leave room for the answer), the
completions body fields of capserve's sampling parameters (the same schema constraint, greedy,
`max_tokens`, the sampled tokens' log-probabilities), and capserve's reader of the output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
import numpy as np

from capabilities.outputs import single_label_result
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.rules import evaluate_rule
from capabilities.spec import CapabilitySpec
from processors.embedding_head import head_result
from processors.embedding_similarity import (
    label_prototypes,
    similarity_probabilities,
    unit_vector,
)
from processors.head_training import Head, load_saved_head
from processors.json_output import (
    GeneratedText,
    JsonSetup,
    read_json_output,
    sampling_params,
    structured_outputs,
)
from processors.model_store import resolve_model_path
from processors.questions.answers import (
    AnswerTokens,
    answer_tokens,
    encode,
    read_choice,
    read_multilabel,
    read_score,
)
from processors.questions.layout import QuestionLayout, build_layout, cues, fitted_prompt
from processors.questions.processor import PromptTooLongError
from schemas.config import CapServeConfig


@dataclass(frozen=True)
class _Question:
    spec: CapabilitySpec
    layout: QuestionLayout
    answers: AnswerTokens
    tokenizer: object


@dataclass(frozen=True)
class JsonQuestion:
    """One llm_json capability as capserve asks it: its setup, and the model's tokenizer and
    context length."""

    setup: JsonSetup
    tokenizer: object
    max_model_len: int


@dataclass(frozen=True)
class JsonPrompt:
    """One llm_json prompt as token ids, and whether the text was cut to fit it."""

    ids: list[int]
    truncated: bool


def json_question(
    tokenizer: Any, spec: CapabilitySpec, max_model_len: int, block_size: int
) -> JsonQuestion:
    """What capserve's llm_json processor builds once per version, without an engine."""
    schema = spec.definition.output_schema
    if schema is None:
        raise ValueError(f"capability '{spec.name}' has no output_schema")
    max_tokens = spec.definition.max_tokens
    setup = JsonSetup(
        spec=spec,
        layout=build_layout(tokenizer, spec, max_model_len, block_size, max_tokens),
        validator=jsonschema.validators.validator_for(schema)(schema),
        params=sampling_params(structured_outputs(schema), max_tokens),
    )
    return JsonQuestion(setup, tokenizer, max_model_len)


def completion_sampling(params: Any) -> dict[str, Any]:
    """The `/v1/completions` body fields that ask a server what vLLM SamplingParams `params`
    ask an engine: max_tokens, temperature, logprobs and the structured-output constraint
    (every field of it that is not at its default)."""
    structured = params.structured_outputs
    constraint = {
        f.name: getattr(structured, f.name)
        for f in dataclasses.fields(structured)
        if not f.name.startswith("_") and getattr(structured, f.name) != f.default
    }
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "logprobs": params.logprobs,
        "structured_outputs": constraint,
    }


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    """The text's tokens as capserve's engines tokenize text placed inside a prompt."""
    ids: list[int] = tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
    return ids


class StandaloneQuestions:
    def __init__(
        self,
        registry: CapabilityRegistry,
        questions: Mapping[str, _Question],
        json_questions: Mapping[str, JsonQuestion] | None = None,
    ) -> None:
        self._registry = registry
        self._questions = dict(questions)
        self._json = dict(json_questions or {})
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
        json_questions: dict[str, JsonQuestion] = {}
        for spec in registry.specs():
            if not spec.uses_prompt or spec.model is None:
                continue
            model = config.models[spec.model]
            if spec.model not in tokenizers:
                path = resolve_model_path(spec.model, model.source, config.models_dir)
                tokenizers[spec.model] = AutoTokenizer.from_pretrained(path)
            tokenizer = tokenizers[spec.model]
            own = spec if spec.group is None else _as_own(spec)
            max_model_len, block_size = model.max_model_len or 2048, model.block_size or 16
            if spec.kind == "llm_json":
                json_questions[spec.name] = json_question(tokenizer, own, max_model_len, block_size)
                continue
            answers = answer_tokens(tokenizer, own)
            longest = answers.longest_answer + 2 if answers.method == "choice" else 1
            layout = build_layout(tokenizer, own, max_model_len, block_size, longest)
            questions[spec.name] = _Question(own, layout, answers, tokenizer)
        return cls(registry, questions, json_questions)

    def kind(self, capability: str) -> str:
        return self._registry.get(capability).kind

    def prompts(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> list[list[int]]:
        """The question's engine prompts as token ids: one, or one per label (multilabel)."""
        question = self._questions[capability]
        shared, _ = question.layout.shared_ids(_text_ids(question.tokenizer, text))
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

    def json_prompt(
        self, capability: str, text: str, deps: Mapping[str, CapabilityResult]
    ) -> JsonPrompt:
        """An llm_json capability's prompt, fitted like capserve's: room left for max_tokens
        of output, the text cut further for this prompt alone when the question needs it."""
        question = self._json[capability]
        setup = question.setup
        (cue,) = cues(setup.spec, deps)
        question_ids = encode(question.tokenizer, setup.layout.question_text(cue))
        limit = question.max_model_len - setup.params.max_tokens
        text_ids = _text_ids(question.tokenizer, text)
        fitted = fitted_prompt(setup.layout, text_ids, question_ids, limit)
        if fitted is None:
            raise PromptTooLongError(f"{len(question_ids)} question tokens; at most {limit}")
        return JsonPrompt(*fitted)

    def json_sampling(self, capability: str) -> dict[str, Any]:
        """The completions body fields of the capability's sampling parameters."""
        return completion_sampling(self._json[capability].setup.params)

    def read_json(
        self, capability: str, prompt: JsonPrompt, generated: GeneratedText
    ) -> CapabilityResult:
        """The result of one generated output, as capserve reads it (error results included)."""
        setup = self._json[capability].setup
        details: dict[str, Any] = {"layout": setup.layout.name}
        if prompt.truncated:
            details["truncated"] = True
        return read_json_output(setup.spec, setup.validator, generated, details)

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

    def has_head(self, capability: str) -> bool:
        """Whether `capserve train` saved a head for the capability's version."""
        try:
            self._head(capability)
        except LookupError:
            return False
        return True

    def read_head(self, capability: str, text_vector: Sequence[float]) -> CapabilityResult:
        """A head's result from the head `capserve train` saved for its version."""
        spec = self._registry.get(capability)
        head = self._head(capability)
        row = head.probabilities(unit_vector(text_vector)[np.newaxis, :])[0]
        return head_result(spec, head, row)

    def _head(self, capability: str) -> Head:
        if capability not in self._heads:
            head = load_saved_head(self._registry.get(capability))
            if head is None:
                raise LookupError(f"'{capability}' has no saved head: run `capserve train`")
            self._heads[capability] = head
        return self._heads[capability]

    def read_rule(self, capability: str, deps: Mapping[str, CapabilityResult]) -> CapabilityResult:
        return evaluate_rule(self._registry.get(capability), deps)


def _as_own(spec: CapabilitySpec) -> CapabilitySpec:
    return dataclasses.replace(spec, layout="own", group=None)
