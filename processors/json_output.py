"""The `llm_json` processor: LLM output that follows a JSON schema (vLLM structured outputs).

- The prompt is laid out like the LLM questions (processors/questions/layout.py): in the
  `shared` layout the group's system part (every shared member's instructions), the text, then
  this capability's cue and answer prefix, so the text's prefill is shared with every other
  question about it through the engine's prefix cache; in `own`, its own instructions.
- Each request carries its capability's schema, as xgrammar's grammar of it with bounded
  whitespace (see `structured_outputs`): one persistent engine answers any number of schemas,
  switched per request, nothing reloaded. vLLM's `auto` backend runs it with xgrammar, on CPU;
  schemas with features xgrammar lacks go as JSON schemas, to guidance.
- Greedy decoding, at most `max_tokens`. The output is parsed and validated again here: output
  cut short, not JSON, or not matching the schema is an explicit error result for that text.
- Confidence: the mean probability of the generated tokens, from the sampled token's
  log-probability (`logprobs=0`, no extra top-k work). vLLM computes it after the schema's
  token mask, so it is the model's certainty among the tokens the schema allows.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import ItemFailure, ItemOutcome, PerVersion, ProcessorInput, WindowContext
from processors.engines import Engine
from processors.overflow import check_cut
from processors.questions.answers import encode
from processors.questions.layout import (
    QuestionLayout,
    build_layout,
    cues,
    fitted_prompt,
    window_text_ids,
)
from processors.questions.processor import PromptTooLongError

# Error results (CapabilityResult.error) of output that cannot be used.
TRUNCATED = "truncated"
INVALID_JSON = "invalid_json"
SCHEMA_MISMATCH = "schema_mismatch"


@dataclass(frozen=True)
class JsonSetup:
    """What one capability version needs; built once per version."""

    spec: CapabilitySpec
    layout: QuestionLayout
    validator: jsonschema.protocols.Validator
    params: Any  # vllm SamplingParams


@dataclass(frozen=True)
class GeneratedText:
    """What the engine returned for one prompt, as the reader needs it."""

    text: str
    finish_reason: str | None
    # The log-probability of each generated token (empty when the engine gave none).
    token_logprobs: tuple[float, ...]


# The most whitespace characters between two JSON tokens: room for indentation three levels
# deep, and a bound on it (see `structured_outputs`).
MAX_WHITESPACE = 16


def structured_outputs(schema: Mapping[str, Any]) -> Any:
    """The schema as vLLM structured-output params: xgrammar's own grammar of the schema, with
    whitespace between tokens bounded.

    Why not `json=schema`: it allows unbounded whitespace, and when the schema stops the small
    model mid-thought (a string at maxLength, a number at its maximum, an array at maxItems)
    it pads newlines until max_tokens (measured: 1 in 20 answers of a two-field schema cut
    short). Bounded, the answers were the same tokens and none was cut short; compact JSON
    (no whitespace at all) made the answers worse (empty arrays). A request's
    `disable_any_whitespace` would not help: vLLM 0.32 reads it from the engine config only.
    Schemas with features xgrammar lacks go as `json=`, for vLLM to hand to another backend.
    Converting takes milliseconds: called once per capability version, off the event loop."""
    import xgrammar
    from vllm.sampling_params import StructuredOutputsParams
    from vllm.v1.structured_output.backend_xgrammar import has_xgrammar_unsupported_json_features

    if has_xgrammar_unsupported_json_features(dict(schema)):
        return StructuredOutputsParams(json=dict(schema))
    grammar = xgrammar.Grammar.from_json_schema(
        json.dumps(schema), any_whitespace=True, max_whitespace_cnt=MAX_WHITESPACE
    )
    return StructuredOutputsParams(grammar=str(grammar))


def sampling_params(structured: Any, max_tokens: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(
        temperature=0.0,
        max_tokens=max_tokens,
        logprobs=0,  # the sampled token's log-probability only
        structured_outputs=structured,
    )


def generated_text(output: Any) -> GeneratedText:
    """The text, finish reason and sampled-token log-probabilities of a RequestOutput."""
    completion = output.outputs[0]
    logprobs: list[float] = []
    for token, step in zip(completion.token_ids, completion.logprobs or (), strict=False):
        if token in step:
            logprobs.append(float(step[token].logprob))
    return GeneratedText(completion.text, completion.finish_reason, tuple(logprobs))


def mean_token_probability(logprobs: Sequence[float]) -> float:
    """1.0 when the engine returned no log-probabilities (nothing to lower it with)."""
    if not logprobs:
        return 1.0
    return sum(math.exp(value) for value in logprobs) / len(logprobs)


def read_json_output(
    spec: CapabilitySpec,
    validator: jsonschema.protocols.Validator,
    generated: GeneratedText,
    details: Mapping[str, Any] | None = None,
) -> CapabilityResult:
    """The result of one text's output, or an error result that says what was wrong with it
    (never the output itself: it may quote the text)."""
    info = {"generated_tokens": len(generated.token_logprobs), **(details or {})}
    if generated.finish_reason == "length":
        return CapabilityResult.failed_output(spec.name, spec.version, TRUNCATED, info)
    try:
        value = json.loads(generated.text)
    except json.JSONDecodeError as exc:
        info["position"] = exc.pos
        return CapabilityResult.failed_output(spec.name, spec.version, INVALID_JSON, info)
    violation = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if violation is not None or not isinstance(value, dict):
        if violation is not None:
            # Keyword and schema location come from the schema, never from the output.
            info["violation"] = str(violation.validator)
            info["schema_path"] = "/".join(str(part) for part in violation.schema_path)
        return CapabilityResult.failed_output(spec.name, spec.version, SCHEMA_MISMATCH, info)
    field = spec.definition.label_field
    label = value.get(field) if field is not None else None
    confidence = mean_token_probability(generated.token_logprobs)
    return CapabilityResult(
        capability=spec.name,
        version=spec.version,
        label=label if isinstance(label, str) else None,
        confidence=confidence,
        probabilities={},  # no label set to spread a probability over
        details={"confidence": "mean_token_probability", **info},
        fields=value,
    )


class JsonOutputProcessor:
    kind = "llm_json"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._setups: PerVersion[JsonSetup] = PerVersion()

    async def setup_for(self, spec: CapabilitySpec) -> JsonSetup:
        return await self._setups.get(spec, lambda: self._build_setup(spec))

    async def _build_setup(self, spec: CapabilitySpec) -> JsonSetup:
        schema = spec.definition.output_schema
        if schema is None:
            raise ValueError(f"capability '{spec.name}' has no output_schema")
        max_tokens = spec.definition.max_tokens

        def layout(tokenizer: Any) -> QuestionLayout:
            return build_layout(
                tokenizer, spec, self.engine.max_model_len, self.engine.block_size, max_tokens
            )

        validator_class = jsonschema.validators.validator_for(schema)
        return JsonSetup(
            spec=spec,
            layout=await self.engine.with_tokenizer(layout),
            validator=validator_class(schema),
            params=sampling_params(await asyncio.to_thread(structured_outputs, schema), max_tokens),
        )

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        setup = await self.setup_for(spec)
        texts = list(dict.fromkeys(item.text for item in inputs))
        text_ids = dict(zip(texts, await window_text_ids(self.engine, texts, context), strict=True))
        questions: list[str | BaseException] = []
        for item in inputs:
            try:
                (cue,) = cues(spec, item.deps)
                questions.append(setup.layout.question_text(cue))
            except Exception as exc:  # a cue that fails to render fails its text alone
                questions.append(exc)

        def encode_all(tokenizer: Any) -> list[list[int] | BaseException]:
            return [q if isinstance(q, BaseException) else encode(tokenizer, q) for q in questions]

        question_ids = await self.engine.with_tokenizer(encode_all)
        # Every prompt at once: the engine batches them (and shares the texts' prefill).
        outcomes = await asyncio.gather(
            *(
                self._answer(setup, text_ids[item.text], ids, item.text, context)
                for item, ids in zip(inputs, question_ids, strict=True)
            ),
            return_exceptions=True,
        )
        return [
            ItemFailure.from_exception(o) if isinstance(o, BaseException) else o for o in outcomes
        ]

    async def _answer(
        self,
        setup: JsonSetup,
        text_ids: Sequence[int],
        question_ids: Sequence[int] | BaseException,
        text: str,
        context: WindowContext,
    ) -> CapabilityResult:
        if isinstance(question_ids, BaseException):
            raise question_ids
        limit = self.engine.max_model_len - setup.params.max_tokens
        fitted = fitted_prompt(setup.layout, text_ids, question_ids, limit)
        if fitted is None:
            raise PromptTooLongError(f"{len(question_ids)} question tokens; at most {limit}")
        ids, truncated = fitted
        check_cut(setup.spec, truncated)
        # Cancelled (aborted in the engine) when no waiting caller needs the text any more.
        output = await context.unless_abandoned(
            text, lambda: self.engine.generate(ids, setup.params, affinity=text)
        )
        details: dict[str, Any] = {"layout": setup.layout.name}
        if truncated:
            details["truncated"] = True
        return read_json_output(setup.spec, setup.validator, generated_text(output), details)
