"""Answer tokens and readers: how a question's next-token log-probabilities become a result.

- llm_choice: the probability mass on each label's first tokens (and their capitalised or
  space-prefixed variants), normalised over the labels; optionally divided by the prior the
  prompt gives content-free inputs ("Calibrate Before Use", Zhao et al., 2021).
- llm_multilabel: one prompt per label; p = P(yes) / (P(yes) + P(no)); the label passes at its
  threshold.
- llm_score: the probability-weighted mean over a digit scale (0-9 or 1-5), mapped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capabilities.outputs import multilabel_result, single_label_result
from capabilities.results import CapabilityResult, normalise
from capabilities.spec import CapabilitySpec

# vLLM's bound on SamplingParams.logprob_token_ids (vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS).
MAX_LABEL_TOKEN_IDS = 128
YES, NO = "yes", "no"
SCALES: Mapping[str, tuple[int, ...]] = {"0-9": tuple(range(10)), "1-5": tuple(range(1, 6))}

# A step's log-probabilities: token id -> log-probability (tokens not listed count as 0).
StepLogprobs = Mapping[int, float]


def encode(tokenizer: Any, text: str) -> list[int]:
    """Encodes capserve's own prompt parts: special-token strings there are meant as such."""
    return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=False))


def first_tokens(tokenizer: Any, words: Sequence[str]) -> dict[str, frozenset[int]]:
    """First token of each word's spelling variants; tokens two words share are dropped."""
    variants: dict[str, set[int]] = {}
    for word in words:
        spellings = {word, word.capitalize(), word.lower(), word.replace("_", " ")}
        ids = set()
        for spelling in spellings:
            for form in (spelling, " " + spelling):
                encoded = encode(tokenizer, form)
                if encoded:
                    ids.add(int(encoded[0]))
        variants[word] = ids
    return {
        word: frozenset(ids - set().union(*(v for other, v in variants.items() if other != word)))
        for word, ids in variants.items()
    }


@dataclass(frozen=True)
class AnswerTokens:
    """The tokens a question's answer is read from, by answer (label, yes/no, or digit)."""

    by_answer: Mapping[str, frozenset[int]]
    # "label_logprobs", "top_logprobs" or "choice" (constrained decoding; llm_choice only).
    method: str
    longest_answer: int  # in tokens, for constrained decoding

    @property
    def ids(self) -> list[int]:
        return sorted(set().union(*self.by_answer.values()))


def answer_tokens(tokenizer: Any, spec: CapabilitySpec) -> AnswerTokens:
    if spec.kind == "llm_score":
        digits = {str(d): frozenset(encode(tokenizer, str(d))[:1]) for d in SCALES[_scale(spec)]}
        if any(len(encode(tokenizer, d)) != 1 for d in digits):
            raise ValueError(f"'{spec.name}': the tokenizer splits a digit into several tokens")
        return AnswerTokens(digits, "label_logprobs", 1)
    words = [YES, NO] if spec.kind == "llm_multilabel" else list(spec.label_names)
    tokens = first_tokens(tokenizer, words)
    longest = max(len(encode(tokenizer, word)) for word in words)
    method = spec.definition.scoring if spec.kind == "llm_choice" else "auto"
    if method == "auto":
        if any(not ids for ids in tokens.values()):
            method = "choice"  # two answers share every first token
        elif sum(len(ids) for ids in tokens.values()) > MAX_LABEL_TOKEN_IDS:
            method = "top_logprobs"
        else:
            method = "label_logprobs"
    if method == "choice" and spec.kind != "llm_choice":
        raise ValueError(f"'{spec.name}': yes and no share their first tokens")
    return AnswerTokens(tokens, method, longest)


def _scale(spec: CapabilitySpec) -> str:
    return spec.definition.scale


def mass(tokens: AnswerTokens, step: StepLogprobs) -> dict[str, float]:
    """The probability the step puts on each answer's tokens."""
    return {
        answer: sum(math.exp(step[t]) for t in ids if t in step)
        for answer, ids in tokens.by_answer.items()
    }


def read_choice(
    spec: CapabilitySpec,
    tokens: AnswerTokens,
    step: StepLogprobs,
    prior: Mapping[str, float] | None = None,
    details: Mapping[str, Any] | None = None,
) -> CapabilityResult:
    scores = mass(tokens, step)
    info = {"scoring": tokens.method, **(details or {})}
    # How much of the model's next-token probability fell on the labels at all.
    info["label_mass"] = round(sum(scores.values()), 4)
    probabilities = normalise(scores)
    if prior is not None:
        probabilities = normalise(
            {label: p / max(prior[label], 1e-6) for label, p in probabilities.items()}
        )
        info["calibrated"] = True
    return single_label_result(spec, probabilities, info)


def read_chosen(
    spec: CapabilitySpec, chosen: str, details: Mapping[str, Any] | None = None
) -> CapabilityResult:
    """llm_choice with constrained decoding: the generated label gets probability 1."""
    label = chosen.strip()
    if label not in spec.label_names:
        raise ValueError(f"constrained decoding returned a non-label ({len(label)} chars)")
    probabilities = {name: float(name == label) for name in spec.label_names}
    info = {"scoring": "choice", **(details or {})}
    return single_label_result(spec, probabilities, info)


def yes_probability(tokens: AnswerTokens, step: StepLogprobs) -> float:
    scores = mass(tokens, step)
    return normalise({YES: scores[YES], NO: scores[NO]})[YES]


def read_multilabel(
    spec: CapabilitySpec,
    tokens: AnswerTokens,
    steps: Sequence[StepLogprobs],
    details: Mapping[str, Any] | None = None,
) -> CapabilityResult:
    """One step per label, in the spec's label order."""
    probabilities = {
        label.name: yes_probability(tokens, step)
        for label, step in zip(spec.labels, steps, strict=True)
    }
    return multilabel_result(spec, probabilities, {"scoring": "yes_no", **(details or {})})


def read_score(
    spec: CapabilitySpec,
    tokens: AnswerTokens,
    step: StepLogprobs,
    details: Mapping[str, Any] | None = None,
) -> CapabilityResult:
    scores = normalise(mass(tokens, step))
    scale = SCALES[_scale(spec)]
    expected = sum(int(digit) * p for digit, p in scores.items())
    value = (expected - scale[0]) / (scale[-1] - scale[0])
    value = min(max(value, 0.0), 1.0)
    return CapabilityResult(
        capability=spec.name,
        version=spec.version,
        label=None,
        confidence=max(scores.values()),
        probabilities=scores,
        details={"scoring": "expected_digit", "scale": _scale(spec), **(details or {})},
        score=value,
    )
