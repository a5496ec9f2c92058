"""Prompt layouts and answer readers of LLM questions, on the embedded LLM's real tokenizer
(no engine): what every question about a text shares, and how answers are read."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.model_store import resolve_model_path
from processors.questions.answers import (
    answer_tokens,
    encode,
    read_choice,
    read_multilabel,
    read_score,
)
from processors.questions.layout import build_layout, cues
from processors.questions.standalone import StandaloneQuestions
from schemas.config import PromptingConfig
from server.registry_loading import model_fingerprints
from server.settings import load_config
from tests.unit.fakes import CLASSIC_CAPABILITIES

REPO = Path(__file__).resolve().parents[2]
BLOCK = 32
TEXT = "My order arrived broken and the support team never answered my three emails."


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    config = load_config(REPO / "configs/default.yaml")
    assert config.models_dir is not None
    model = config.models["smollm2"]
    return AutoTokenizer.from_pretrained(
        resolve_model_path("smollm2", model.source, config.models_dir)
    )


def registry(prompting: PromptingConfig | None = None) -> CapabilityRegistry:
    config = load_config(REPO / "configs/default.yaml")
    runners = {name: m.runner for name, m in config.models.items()}
    # The frozen classic set: LLM questions of every kind, shared and own (fakes.py).
    return CapabilityRegistry.from_directory(
        CLASSIC_CAPABILITIES, runners, model_fingerprints(config), prompting
    )


def prompts(
    tokenizer: Any, spec: CapabilitySpec, text: str, deps: dict[str, CapabilityResult] | None = None
) -> list[list[int]]:
    layout = build_layout(tokenizer, spec, 2048, BLOCK, 1)
    text_ids = tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
    shared, _ = layout.shared_ids(text_ids)
    return [
        [*shared, *encode(tokenizer, layout.question_text(cue))] for cue in cues(spec, deps or {})
    ]


def task(label: str) -> dict[str, CapabilityResult]:
    return {"task_type": CapabilityResult("task_type", "v", label, 0.9, {label: 0.9})}


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_every_shared_question_about_a_text_shares_everything_but_its_cue(tokenizer: Any):
    reg = registry()
    text_ids = tokenizer.encode(TEXT, add_special_tokens=False)
    asked = {
        "sentiment": prompts(tokenizer, reg.get("sentiment"), TEXT),
        "safety": prompts(tokenizer, reg.get("safety"), TEXT),
        "complexity": prompts(tokenizer, reg.get("complexity"), TEXT, task("chat")),
    }
    assert reg.get("reasoning").layout == "own"  # defined in its own layout: shares nothing
    own = prompts(tokenizer, reg.get("reasoning"), TEXT)[0]
    assert common_prefix(own, asked["sentiment"][0]) < len(text_ids)
    assert len(asked["safety"]) == 2  # one prompt per label
    flat = [p for ps in asked.values() for p in ps]
    shared = min(common_prefix(flat[0], p) for p in flat[1:])
    # The shared part holds the whole group system part and the whole text ...
    group_system = reg.get("sentiment").group
    assert group_system is not None
    system_ids = encode(tokenizer, group_system.system_text())
    assert shared > len(system_ids) + len(text_ids)
    # ... and what follows it is short: the cue and the answer prefix only.
    assert max(len(p) - shared for p in flat) < 40
    # The upstream result sits after the text, in the cue.
    complexity = asked["complexity"][0]
    assert "Task: chat" in tokenizer.decode(complexity[shared:])


def test_own_layout_puts_only_its_own_instructions_first(tokenizer: Any):
    reg = registry(PromptingConfig(layout_override="own"))
    sentiment = prompts(tokenizer, reg.get("sentiment"), TEXT)[0]
    reasoning = prompts(tokenizer, reg.get("reasoning"), TEXT)[0]
    text_ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert common_prefix(sentiment, reasoning) < len(text_ids)  # nothing of the text is shared
    assert "Rate how much multi-step reasoning" not in tokenizer.decode(sentiment)


def test_padding_ends_the_shared_part_on_a_block(tokenizer: Any):
    reg = registry(PromptingConfig(pad_to_block=True))
    for text in (TEXT, TEXT * 3, "Hi"):
        spec = reg.get("sentiment")
        layout = build_layout(tokenizer, spec, 2048, BLOCK, 1)
        shared, _ = layout.shared_ids(tokenizer.encode(text, add_special_tokens=False))
        assert len(shared) % BLOCK == 0


def test_a_long_text_is_cut_once_for_the_whole_group(tokenizer: Any):
    reg = registry(PromptingConfig(layout_override="shared"))  # all five in one group
    long_text = "word " * 3000
    cut = [
        prompts(tokenizer, reg.get(name), long_text, task("chat") if name == "complexity" else None)
        for name in ("sentiment", "reasoning", "complexity")
    ]
    first = cut[0][0]
    shared = min(common_prefix(first, p[0]) for p in cut[1:])
    layouts = {
        build_layout(tokenizer, reg.get(n), 2048, BLOCK, 1).text_budget
        for n in ("sentiment", "reasoning", "safety", "creativity", "complexity")
    }
    assert len(layouts) == 1  # one budget for the group: the text is cut the same way
    assert all(len(p[0]) <= 2048 - 1 for p in cut)
    assert shared > 1000  # the cut text is still shared


def test_standalone_prompts_are_the_own_layout_prompts(tokenizer: Any):
    config = load_config(REPO / "configs/default.yaml")
    own = registry(PromptingConfig(layout_override="own"))
    standalone = StandaloneQuestions.from_config(config, own)
    for name in ("sentiment", "safety", "reasoning"):
        assert standalone.prompts(name, TEXT, {}) == prompts(tokenizer, own.get(name), TEXT)
    assert standalone.kind("safety") == "llm_multilabel"


def test_readers(tokenizer: Any):
    reg = registry()
    score_spec = reg.get("reasoning")
    digits = answer_tokens(tokenizer, score_spec)
    step = {
        next(iter(digits.by_answer["3"])): math.log(0.5),
        next(iter(digits.by_answer["7"])): math.log(0.5),
    }
    result = read_score(score_spec, digits, step)
    assert result.score == pytest.approx(5 / 9) and result.label is None
    safety = reg.get("safety")
    yes_no = answer_tokens(tokenizer, safety)
    yes, no = min(yes_no.by_answer["yes"]), min(yes_no.by_answer["no"])
    steps = [{yes: math.log(0.8), no: math.log(0.2)}, {yes: math.log(0.1), no: math.log(0.9)}]
    multi = read_multilabel(safety, yes_no, steps)
    assert multi.labels == ("toxicity",) and multi.label == "toxicity"
    assert multi.probabilities["toxicity"] == pytest.approx(0.8)
    assert multi.probabilities["prompt_injection"] == pytest.approx(0.1)
    sentiment = reg.get("sentiment")
    labels = answer_tokens(tokenizer, sentiment)
    assert labels.method == "label_logprobs"
    pos, neg = min(labels.by_answer["positive"]), min(labels.by_answer["negative"])
    raw = read_choice(sentiment, labels, {pos: math.log(0.6), neg: math.log(0.2)})
    assert raw.label == "positive" and raw.probabilities["positive"] == pytest.approx(0.75)
    prior = {"positive": 0.9, "negative": 0.05, "neutral": 0.05}
    calibrated = read_choice(sentiment, labels, {pos: math.log(0.6), neg: math.log(0.2)}, prior)
    assert calibrated.label == "negative" and calibrated.details["calibrated"] is True
