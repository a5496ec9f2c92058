"""Texts longer than a model's context: `on_overflow` in the capability's version, and the
refusal of the texts over the limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from capabilities.spec import CapabilitySpec
from processors.base import ItemFailure
from processors.overflow import (
    TEXT_TOO_LONG,
    TextTooLongForModelError,
    check_cut,
    overflowing,
    refuse,
)
from schemas.capability import CapabilityDefinition

T = TypeVar("T")


def spec_with(**fields: Any) -> CapabilitySpec:
    definition = CapabilityDefinition.model_validate(
        {"name": "topic", "kind": "embedding_similarity", "model": "minilm", "labels": ["a", "b"]}
        | fields
    )
    return CapabilitySpec.from_definition(definition, Path("topic.yaml"))


class WordTokenizer:
    """One token per word, plus two special tokens (as BERT's [CLS] and [SEP])."""

    def __call__(self, texts: list[str], **options: Any) -> dict[str, list[list[int]]]:
        assert options["add_special_tokens"] is True
        return {"input_ids": [[0] * (len(text.split()) + 2) for text in texts]}


class FakeEngine:
    max_model_len = 5

    async def with_tokenizer(self, work: Callable[[Any], T]) -> T:
        return work(WordTokenizer())


def test_on_overflow_enters_the_version_only_when_it_refuses():
    default = spec_with()
    assert spec_with(on_overflow="truncate").version == default.version
    assert spec_with(on_overflow="refuse").version != default.version


async def test_a_refusing_capability_fails_the_texts_over_the_context_alone():
    texts = ["one two three", "one two three four", "short"]
    refusing = spec_with(on_overflow="refuse")
    over = await overflowing(FakeEngine(), refusing, texts)
    assert over == {1}
    outcomes = refuse(["r0", "r1", "r2"], over)  # type: ignore[list-item]
    assert outcomes == ["r0", ItemFailure(TEXT_TOO_LONG), "r2"]
    assert await overflowing(FakeEngine(), spec_with(), texts) == set()  # truncated instead


def test_a_cut_prompt_is_refused_only_by_a_refusing_capability():
    check_cut(spec_with(), truncated=True)
    check_cut(spec_with(on_overflow="refuse"), truncated=False)
    with pytest.raises(TextTooLongForModelError, match="refuses texts cut to fit"):
        check_cut(spec_with(on_overflow="refuse"), truncated=True)
    assert TextTooLongForModelError.__name__ == TEXT_TOO_LONG
