"""The `llm_choice` processor: one label out of N, scored by an instruct LLM in one decode step.

Prompt layout: [system: instructions and labels] [user: the text] [assistant: answer prefix].
Everything before the text is identical for every text of a capability, so vLLM's prefix cache
reuses it across the whole window.

Scoring methods (`scoring` in the capability YAML):
- label_logprobs: one generated token with `logprob_token_ids` set to the first tokens of every
  label (and its capitalised / space-prefixed variants): exact label probabilities in one step.
- top_logprobs: one generated token with `logprobs=20`; labels outside the top 20 count as 0.
- choice: constrained decoding to the label strings (used when labels share a first token);
  several decode steps, and the chosen label gets probability 1.
- auto: label_logprobs when every label has a first token of its own (top_logprobs when the
  labels have more first tokens than vLLM scores at once), else choice. Measured on
  the embedded model, the three methods run within a few percent of each other (README,
  "Scoring method"); label_logprobs is the exact one, so it is the default.

`calibrate: true` divides the label probabilities by those the same prompt gives content-free
inputs ("N/A", ...), computed once per capability version: small models lean towards some
labels whatever the text says, and this takes the lean out ("Calibrate Before Use",
Zhao et al., 2021).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capabilities.results import CapabilityResult, normalise, result_from_probabilities
from capabilities.spec import CapabilitySpec
from capabilities.templates import CompiledTemplate, compile_template
from processors.base import ItemFailure, ItemOutcome, PerVersion, ProcessorInput, WindowContext
from processors.engines import Engine

TOP_LOGPROBS = 20
# vLLM's bound on SamplingParams.logprob_token_ids (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS).
MAX_LABEL_TOKEN_IDS = 128
# Inputs with no content: what the prompt alone makes the model say (the prior to divide out).
CONTENT_FREE_TEXTS = ("N/A", "[MASK]", "...")


@dataclass(frozen=True)
class ChoiceSetup:
    """What a capability version needs to score prompts; built once per version."""

    method: str
    prefix_ids: tuple[int, ...]  # chat-formatted system part and the user turn's opening
    user: CompiledTemplate
    suffix_ids: tuple[int, ...]  # the user turn's end, the assistant turn and answer prefix
    label_tokens: Mapping[str, frozenset[int]]
    longest_label: int  # in tokens, for constrained decoding
    # With `calibrate`: the label probabilities the prompt gives content-free inputs.
    prior: Mapping[str, float] | None = None


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Encodes instructions and labels: special-token strings there are meant as such."""
    return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=False))


def label_first_tokens(tokenizer: Any, labels: Sequence[str]) -> dict[str, set[int]]:
    """First token of each label's spelling variants; tokens two labels share are dropped."""
    variants: dict[str, set[int]] = {}
    for label in labels:
        spellings = {label, label.capitalize(), label.lower(), label.replace("_", " ")}
        ids = set()
        for spelling in spellings:
            for form in (spelling, " " + spelling):
                encoded = _encode(tokenizer, form)
                if encoded:
                    ids.add(int(encoded[0]))
        variants[label] = ids
    return {
        label: ids - set().union(*(v for other, v in variants.items() if other != label))
        for label, ids in variants.items()
    }


@dataclass(frozen=True)
class PromptTokens:
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    label_tokens: dict[str, set[int]]
    longest_label: int


def prompt_tokens(
    tokenizer: Any, system: str, answer_prefix: str, labels: Sequence[str]
) -> PromptTokens:
    """Tokenizes what a capability's prompts share: run on the engine's tokenizer thread."""
    marker = "\x00USER\x00"
    formatted = tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": marker}],
        tokenize=False,
        add_generation_prompt=True,
    )
    head, tail = formatted.split(marker)  # the text goes between them
    return PromptTokens(
        prefix_ids=tuple(_encode(tokenizer, head)),
        suffix_ids=tuple(_encode(tokenizer, tail + answer_prefix)),
        label_tokens=label_first_tokens(tokenizer, labels),
        longest_label=max(len(_encode(tokenizer, label)) for label in labels),
    )


class LLMChoiceProcessor:
    kind = "llm_choice"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._setups: PerVersion[ChoiceSetup] = PerVersion()

    async def setup_for(self, spec: CapabilitySpec) -> ChoiceSetup:
        """Built once per capability version (calibration included)."""
        return await self._setups.get(spec, lambda: self._calibrated_setup(spec))

    async def _calibrated_setup(self, spec: CapabilitySpec) -> ChoiceSetup:
        setup = await self._build_setup(spec)
        if not spec.definition.calibrate or setup.method == "choice":
            return setup
        content_free = [ProcessorInput(text, {}) for text in CONTENT_FREE_TEXTS]
        outcomes = await self._score_all(spec, setup, content_free)
        scored = [r for r in outcomes if isinstance(r, CapabilityResult)]
        if len(scored) != len(outcomes):
            raise RuntimeError(f"calibration of '{spec.name}' failed on the engine")
        prior = {
            label: sum(r.probabilities[label] for r in scored) / len(scored)
            for label in spec.label_names
        }
        return dataclasses.replace(setup, prior=prior)

    async def _build_setup(self, spec: CapabilitySpec) -> ChoiceSetup:
        prompt = spec.definition.prompt
        if prompt is None:
            raise ValueError(f"capability '{spec.name}' has no prompt")
        system = compile_template(prompt.system).render(spec.labels)
        labels, answer_prefix = spec.label_names, prompt.answer_prefix
        shared = await self.engine.with_tokenizer(
            lambda tokenizer: prompt_tokens(tokenizer, system, answer_prefix, labels)
        )
        tokens = shared.label_tokens
        method = spec.definition.scoring
        distinct = all(tokens.values())
        if method == "auto":
            method = "label_logprobs" if distinct else "choice"
        elif method in ("label_logprobs", "top_logprobs") and not distinct:
            method = "choice"
        if method == "label_logprobs" and sum(map(len, tokens.values())) > MAX_LABEL_TOKEN_IDS:
            method = "top_logprobs"  # vLLM scores at most this many chosen token ids
        return ChoiceSetup(
            method=method,
            prefix_ids=shared.prefix_ids,
            user=compile_template(prompt.user),
            suffix_ids=shared.suffix_ids,
            label_tokens={k: frozenset(v) for k, v in tokens.items()},
            longest_label=shared.longest_label,
        )

    def _params(self, setup: ChoiceSetup, labels: Sequence[str]) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if setup.method == "label_logprobs":
            ids = sorted(set().union(*setup.label_tokens.values()))
            return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids)
        if setup.method == "top_logprobs":
            return SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        return SamplingParams(
            max_tokens=setup.longest_label + 2,
            temperature=0.0,
            # With and without a leading space: after "Answer:" models write " label", and
            # forcing "label" alone would push them off their own distribution.
            structured_outputs=StructuredOutputsParams(
                choice=[*labels, *(" " + label for label in labels)]
            ),
        )

    def _score(
        self, spec: CapabilitySpec, setup: ChoiceSetup, output: Any, truncated: bool
    ) -> CapabilityResult:
        completion = output.outputs[0]
        details: dict[str, Any] = {"scoring": setup.method}
        if truncated:
            details["truncated"] = True
        if setup.method == "choice":
            label = completion.text.strip()
            if label not in spec.label_names:
                raise ValueError(f"constrained decoding returned a non-label ({len(label)} chars)")
            probabilities = {name: float(name == label) for name in spec.label_names}
            return result_from_probabilities(spec.name, spec.version, probabilities, details)
        step = completion.logprobs[0] if completion.logprobs else {}
        mass = {
            label: sum(math.exp(step[t].logprob) for t in ids if t in step)
            for label, ids in setup.label_tokens.items()
        }
        # How much of the model's next-token probability fell on the labels at all.
        details["label_mass"] = round(sum(mass.values()), 4)
        probabilities = normalise(mass)
        if setup.prior is not None:
            prior = setup.prior
            probabilities = normalise(
                {label: p / max(prior[label], 1e-6) for label, p in probabilities.items()}
            )
            details["calibrated"] = True
        return result_from_probabilities(spec.name, spec.version, probabilities, details)

    async def _score_all(
        self, spec: CapabilitySpec, setup: ChoiceSetup, inputs: Sequence[ProcessorInput]
    ) -> list[ItemOutcome]:
        params = self._params(setup, spec.label_names)
        users = [setup.user.render(spec.labels, item.text, item.deps) for item in inputs]
        user_ids = await self.engine.tokenize(users)
        # A text too long for the model is cut at the end, never the instructions around it.
        budget = self.engine.max_model_len - len(setup.prefix_ids) - len(setup.suffix_ids)
        budget -= params.max_tokens
        prompts = [[*setup.prefix_ids, *ids[:budget], *setup.suffix_ids] for ids in user_ids]
        # Every prompt runs to its end: a failed one fails only its own text.
        outputs = await asyncio.gather(
            *(self.engine.generate(ids, params) for ids in prompts), return_exceptions=True
        )
        outcomes: list[ItemOutcome] = []
        for output, ids in zip(outputs, user_ids, strict=True):
            try:
                if isinstance(output, BaseException):
                    raise output
                outcomes.append(self._score(spec, setup, output, len(ids) > budget))
            except Exception as exc:
                outcomes.append(ItemFailure.from_exception(exc))
        return outcomes

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> list[ItemOutcome]:
        return await self._score_all(spec, await self.setup_for(spec), inputs)
