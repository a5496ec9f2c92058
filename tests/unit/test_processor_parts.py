"""Pure parts of the processors: label tokens, rules, shared window values, model sources."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.rules import evaluate_rule
from processors.base import WindowContext
from processors.model_store import ModelNotReadyError, resolve_model_path
from processors.questions.answers import first_tokens


class WordTokenizer:
    """Each word (with its leading space) is one token; the first letters decide the id."""

    def encode(self, text: str, **_options: bool) -> list[int]:
        word = text.strip().lower()
        return [hash((text.startswith(" "), word[:3]))]


def test_label_tokens_drop_first_tokens_that_labels_share():
    tokens = first_tokens(WordTokenizer(), ["positive", "negative", "posh"])
    assert tokens["negative"]
    assert tokens["positive"] == frozenset() and tokens["posh"] == frozenset()


def dep(name: str, label: str, confidence: float) -> CapabilityResult:
    return CapabilityResult(name, "v", label, confidence, {label: confidence})


def complexity(score: float) -> CapabilityResult:
    return CapabilityResult(
        "complexity", "v", None, 0.9, {}, score=score, fields={"prompt_complexity_score": score}
    )


def test_route_rule_cases_in_order(shipped_registry: CapabilityRegistry):
    route = shipped_registry.get("route")
    creative = evaluate_rule(
        route,
        {"task_type": dep("task_type", "Text Generation", 0.9), "complexity": complexity(0.1)},
    )
    assert creative.label == "slow" and creative.details["tier"] == "large"
    assert creative.details["matched"] == "case 0"
    hard = evaluate_rule(
        route,
        {"task_type": dep("task_type", "Code Generation", 0.9), "complexity": complexity(0.6)},
    )
    assert hard.label == "slow" and hard.details["matched"] == "case 1"
    # A fast decision on an uncertain task type goes slow (the YAML's threshold).
    unsure = evaluate_rule(
        route,
        {"task_type": dep("task_type", "Code Generation", 0.3), "complexity": complexity(0.1)},
    )
    assert unsure.label == "slow" and unsure.details["tier"] == "medium"
    simple = evaluate_rule(
        route, {"task_type": dep("task_type", "Closed QA", 0.8), "complexity": complexity(0.1)}
    )
    assert simple.label == "fast" and simple.details["matched"] == "default"
    assert simple.details["tier"] == "small"
    assert sum(simple.probabilities.values()) == 1.0


async def test_window_context_computes_each_key_once():
    context = WindowContext()
    calls: list[list[str]] = []

    async def compute(keys: Sequence[str]) -> list[str]:
        calls.append(list(keys))
        await asyncio.sleep(0.01)
        return [k.upper() for k in keys]

    first, second = await asyncio.gather(
        context.shared("emb", ["a", "b", "a"], compute),
        context.shared("emb", ["b", "c"], compute),
    )
    assert first == ["A", "B", "A"] and second == ["B", "C"]
    assert calls == [["a", "b"], ["c"]]


async def test_window_context_passes_errors_to_every_waiter():
    context = WindowContext()

    async def broken(keys: Sequence[str]) -> list[str]:
        await asyncio.sleep(0.01)
        raise RuntimeError("no engine")

    results = await asyncio.gather(
        context.shared("emb", ["a"], broken),
        context.shared("emb", ["a"], broken),
        return_exceptions=True,
    )
    assert all(isinstance(r, RuntimeError) for r in results)


def test_model_sources(tmp_path: Path):
    assert resolve_model_path("m", str(tmp_path), tmp_path) == str(tmp_path.resolve())
    assert resolve_model_path("m", "org/some-model", tmp_path) == "org/some-model"
    with pytest.raises(ModelNotReadyError, match=r"local folder \./nowhere does not exist"):
        resolve_model_path("m", "./nowhere", tmp_path)
    with pytest.raises(ModelNotReadyError, match="unknown embedded model 'nope'"):
        resolve_model_path("m", "embedded:nope", tmp_path)
    empty = tmp_path / "empty-models"
    with pytest.raises(ModelNotReadyError, match="run `capserve prepare-models`"):
        resolve_model_path("m", "embedded:smollm2-135m-instruct", empty)


async def test_special_token_text_in_a_submission_stays_plain_text():
    from transformers import AutoTokenizer

    from processors.engines import Engine
    from processors.model_store import EMBEDDED

    folder = EMBEDDED["all-minilm-l6-v2"].prepare(Path("/nonexistent"))  # ships ready-made
    tokenizer = AutoTokenizer.from_pretrained(folder)
    engine = Engine("minilm", "pooling", None, tokenizer, 256)  # only its tokenizer is used
    sep = tokenizer.sep_token_id
    (with_specials,) = await engine.tokenize(["hi [SEP] there"], truncate_to=64)
    assert with_specials[0] == tokenizer.cls_token_id and with_specials[-1] == sep
    assert sep not in with_specials[1:-1]
    (bare,) = await engine.tokenize(["hi [SEP] there"])
    assert sep not in bare


async def test_per_version_builds_once_per_version_and_retries_a_failed_build(
    classic_registry: CapabilityRegistry,
):
    from processors.base import PerVersion

    cache: PerVersion[int] = PerVersion()
    builds: list[str] = []

    async def build() -> int:
        builds.append("built")
        await asyncio.sleep(0.01)
        if len(builds) == 1:
            raise RuntimeError("engine busy")
        return len(builds)

    spec = classic_registry.get("topic")
    with pytest.raises(RuntimeError):
        await cache.get(spec, build)
    values = await asyncio.gather(*(cache.get(spec, build) for _ in range(5)))
    assert values == [2] * 5 and len(builds) == 2
