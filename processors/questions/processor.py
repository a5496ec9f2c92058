"""The LLM question processor: every question of a window about the same texts, on one engine,
in one pass.

All questions that start together (one wave of the executor) are answered in one call:
- each unique text is tokenized once per window and truncated once per layout;
- a text's questions are sent to the engine together (text-major), so its KV blocks are still
  cached when its next question runs, in chunks of at most `max_tokens_in_flight` prompt
  tokens, so that a window's texts fit the KV cache;
- each prompt is scored in one decode step from its answer tokens' log-probabilities (see
  `answers`); a failed prompt fails only its own text;
- each prompt runs as a task of its own, cancelled (aborted in the engine) when its text is
  abandoned (see `WindowContext.unless_abandoned`); that text's outcome is ItemAbandoned.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from capabilities.results import CapabilityResult, normalise
from capabilities.spec import CapabilitySpec
from processors.base import (
    ItemFailure,
    ItemOutcome,
    PerVersion,
    ProcessorInput,
    StepWork,
    WindowContext,
)
from processors.engines import Engine
from processors.overflow import check_cut
from processors.questions.answers import (
    AnswerTokens,
    StepLogprobs,
    answer_tokens,
    encode,
    read_choice,
    read_chosen,
    read_multilabel,
    read_score,
)
from processors.questions.layout import QuestionLayout, build_layout, cues, window_text_ids

TOP_LOGPROBS = 20
# Inputs with no content: what the prompt alone makes the model say (the prior to divide out).
CONTENT_FREE_TEXTS = ("N/A", "[MASK]", "...")


class PromptTooLongError(ValueError):
    """A question's prompt does not fit the model's context, even with the text cut."""


@dataclass(frozen=True)
class QuestionSetup:
    """What one capability version needs to ask its question; built once per version."""

    spec: CapabilitySpec
    layout: QuestionLayout
    answers: AnswerTokens
    params: Any  # vllm SamplingParams
    prior: Mapping[str, float] | None = None


@dataclass
class _Prompt:
    work: int  # index into the call's StepWork list
    item: int  # index into that work's inputs
    text: int  # rank of the text among the call's unique texts
    ids: list[int] = field(default_factory=list)
    truncated: bool = False


def sampling_params(answers: AnswerTokens, labels: Sequence[str]) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    if answers.method == "label_logprobs":
        return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=answers.ids)
    if answers.method == "top_logprobs":
        return SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
    return SamplingParams(
        max_tokens=answers.longest_answer + 2,
        temperature=0.0,
        # With and without a leading space: after "Answer:" models write " label", and
        # forcing "label" alone would push them off their own distribution.
        structured_outputs=StructuredOutputsParams(
            choice=[*labels, *(" " + label for label in labels)]
        ),
    )


def step_logprobs(output: Any) -> StepLogprobs:
    """The first generated step's log-probabilities, by token id."""
    completion = output.outputs[0]
    step = completion.logprobs[0] if completion.logprobs else {}
    return {int(token): float(value.logprob) for token, value in step.items()}


def read_outputs(
    setup: QuestionSetup, outputs: Sequence[Any], details: Mapping[str, Any]
) -> CapabilityResult:
    """One text's result from its prompts' outputs (several for a multilabel question)."""
    spec, answers = setup.spec, setup.answers
    if spec.kind == "llm_multilabel":
        return read_multilabel(spec, answers, [step_logprobs(o) for o in outputs], details)
    (output,) = outputs
    if spec.kind == "llm_score":
        return read_score(spec, answers, step_logprobs(output), details)
    if answers.method == "choice":
        return read_chosen(spec, output.outputs[0].text, details)
    return read_choice(spec, answers, step_logprobs(output), setup.prior, details)


class LLMQuestionProcessor:
    kind = "llm_question"

    def __init__(self, engine: Engine, max_tokens_in_flight: int = 16384) -> None:
        self.engine = engine
        self.max_tokens_in_flight = max_tokens_in_flight
        self._setups: PerVersion[QuestionSetup] = PerVersion()

    def group_key(self, spec: CapabilitySpec) -> Hashable:
        return self.engine.name  # every question on this engine that starts together

    async def setup_for(self, spec: CapabilitySpec) -> QuestionSetup:
        """Built once per capability version (calibration included)."""
        return await self._setups.get(spec, lambda: self._build_setup(spec))

    async def _build_setup(self, spec: CapabilitySpec) -> QuestionSetup:
        def build(tokenizer: Any) -> tuple[QuestionLayout, AnswerTokens]:
            answers = answer_tokens(tokenizer, spec)
            longest = answers.longest_answer + 2 if answers.method == "choice" else 1
            layout = build_layout(
                tokenizer, spec, self.engine.max_model_len, self.engine.block_size, longest
            )
            return layout, answers

        layout, answers = await self.engine.with_tokenizer(build)
        setup = QuestionSetup(spec, layout, answers, sampling_params(answers, spec.label_names))
        if not spec.definition.calibrate or answers.method == "choice":
            return setup
        # The prior comes from the very prompts the question asks: same system part, padding,
        # cue and answer prefix, with content-free texts.
        content_free = [ProcessorInput(text, {}) for text in CONTENT_FREE_TEXTS]
        (outcomes,) = await self._answer([setup], [content_free], WindowContext())
        scored = [r for r in outcomes if isinstance(r, CapabilityResult)]
        if len(scored) != len(outcomes):
            raise RuntimeError(f"calibration of '{spec.name}' failed on the engine")
        prior = {
            label: sum(r.probabilities[label] for r in scored) / len(scored)
            for label in spec.label_names
        }
        return dataclasses.replace(setup, prior=normalise(prior))

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        (outcomes,) = await self.run_group([StepWork(spec, inputs)], context)
        return outcomes

    async def run_group(
        self, work: Sequence[StepWork], context: WindowContext
    ) -> list[list[ItemOutcome]]:
        setups = list(await asyncio.gather(*(self.setup_for(w.spec) for w in work)))
        return await self._answer(setups, [w.inputs for w in work], context)

    async def _text_ids(self, texts: Sequence[str], context: WindowContext) -> list[list[int]]:
        """Each text's tokens, computed once per window for every question about it."""
        return await window_text_ids(self.engine, texts, context)

    async def _answer(
        self,
        setups: Sequence[QuestionSetup],
        inputs: Sequence[Sequence[ProcessorInput]],
        context: WindowContext,
    ) -> list[list[ItemOutcome]]:
        texts = list(dict.fromkeys(item.text for items in inputs for item in items))
        rank = {text: i for i, text in enumerate(texts)}
        text_ids = dict(zip(texts, await self._text_ids(texts, context), strict=True))
        # The question part of every prompt, tokenized in one call.
        prompts: list[_Prompt] = []
        questions: list[str] = []
        for w, (setup, items) in enumerate(zip(setups, inputs, strict=True)):
            for i, item in enumerate(items):
                for cue in cues(setup.spec, item.deps):
                    prompts.append(_Prompt(w, i, rank[item.text]))
                    questions.append(setup.layout.question_text(cue))

        def encode_all(tokenizer: Any) -> list[list[int]]:
            return [encode(tokenizer, q) for q in questions]

        question_ids = await self.engine.with_tokenizer(encode_all)
        shared: dict[tuple[int, str], tuple[list[int], bool]] = {}
        for prompt, ids in zip(prompts, question_ids, strict=True):
            setup = setups[prompt.work]
            text = texts[prompt.text]
            key = (id(setup.layout), text)
            if key not in shared:
                shared[key] = setup.layout.shared_ids(text_ids[text])
            head, prompt.truncated = shared[key]
            prompt.ids = [*head, *ids]
        outputs = await self._generate(prompts, setups, texts, context)
        return self._results(setups, inputs, prompts, outputs)

    async def _generate(
        self,
        prompts: Sequence[_Prompt],
        setups: Sequence[QuestionSetup],
        texts: Sequence[str],
        context: WindowContext,
    ) -> dict[int, Any]:
        """Sends the prompts text by text, in chunks that fit the KV cache; an output or the
        exception that stopped it, by prompt index."""
        order = sorted(range(len(prompts)), key=lambda n: (prompts[n].text, prompts[n].work))
        outputs: dict[int, Any] = {}
        chunk: list[int] = []
        tokens = 0
        for position, n in enumerate(order):
            chunk.append(n)
            tokens += len(prompts[n].ids)
            last = position + 1 == len(order)
            text_done = last or prompts[order[position + 1]].text != prompts[n].text
            if last or (text_done and tokens >= self.max_tokens_in_flight):
                results = await asyncio.gather(
                    *(
                        self._one(prompts[m], setups[prompts[m].work], texts, context)
                        for m in chunk
                    ),
                    return_exceptions=True,
                )
                outputs.update(zip(chunk, results, strict=True))
                chunk, tokens = [], 0
        return outputs

    async def _one(
        self,
        prompt: _Prompt,
        setup: QuestionSetup,
        texts: Sequence[str],
        context: WindowContext,
    ) -> Any:
        check_cut(setup.spec, prompt.truncated)
        limit = self.engine.max_model_len - setup.params.max_tokens
        if len(prompt.ids) > limit:
            raise PromptTooLongError(f"{len(prompt.ids)} prompt tokens; at most {limit}")
        return await context.unless_abandoned(
            texts[prompt.text],
            lambda: self.engine.generate(prompt.ids, setup.params, affinity=texts[prompt.text]),
        )

    @staticmethod
    def _results(
        setups: Sequence[QuestionSetup],
        inputs: Sequence[Sequence[ProcessorInput]],
        prompts: Sequence[_Prompt],
        outputs: Mapping[int, Any],
    ) -> list[list[ItemOutcome]]:
        grouped: dict[tuple[int, int], list[int]] = {}
        for n, prompt in enumerate(prompts):
            grouped.setdefault((prompt.work, prompt.item), []).append(n)
        results: list[list[ItemOutcome]] = []
        for w, (setup, items) in enumerate(zip(setups, inputs, strict=True)):
            outcomes: list[ItemOutcome] = []
            for i in range(len(items)):
                numbers = grouped[(w, i)]
                try:
                    got = [outputs[n] for n in numbers]
                    failed = next((o for o in got if isinstance(o, BaseException)), None)
                    if failed is not None:
                        raise failed
                    details: dict[str, Any] = {"layout": setup.layout.name}
                    if prompts[numbers[0]].truncated:
                        details["truncated"] = True
                    outcomes.append(read_outputs(setup, got, details))
                except Exception as exc:
                    outcomes.append(ItemFailure.from_exception(exc))
            results.append(outcomes)
        return results
