"""Texts longer than a model's context: cut to fit (`on_overflow: truncate`, the default) or
refused (`on_overflow: refuse`: the text fails alone, with a per-text error `text_too_long`).

Where each family meets the limit:
- LLM questions and llm_json cut the text inside the prompt (processors/questions/layout.py);
  a refusing capability raises TextTooLongForModelError for that text instead of asking.
- Embedding kinds and classifiers tokenize with truncation to the model's max_model_len; a
  refusing capability counts the text's tokens and fails the texts over it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from capabilities.spec import CapabilitySpec
from processors.base import ItemAbandoned, ItemFailure, ItemOutcome

T = TypeVar("T")


class TokenizingEngine(Protocol):
    """What the check needs of an engine (processors.engines.Engine)."""

    max_model_len: int

    async def with_tokenizer(self, work: Callable[[Any], T]) -> T: ...


class TextTooLongForModelError(Exception):
    """A text does not fit the model's context, and its capability refuses to truncate."""


# The failure reason of a refused text (ItemFailure.reason); the API maps it to text_too_long.
TEXT_TOO_LONG = TextTooLongForModelError.__name__


def refuses(spec: CapabilitySpec) -> bool:
    return spec.definition.on_overflow == "refuse"


def check_cut(spec: CapabilitySpec, truncated: bool) -> None:
    """Raises TextTooLongForModelError when the text was cut to fit and `spec` refuses that."""
    if truncated and refuses(spec):
        raise TextTooLongForModelError(f"capability '{spec.name}' refuses texts cut to fit")


async def overflowing(
    engine: TokenizingEngine, spec: CapabilitySpec, texts: Sequence[str]
) -> set[int]:
    """The positions of the texts longer than the engine's context (special tokens included),
    when `spec` refuses them; else none (they are truncated)."""
    if not refuses(spec):
        return set()

    def count(tokenizer: Any) -> list[int]:
        encoded = tokenizer(list(texts), add_special_tokens=True, split_special_tokens=True)
        return [len(ids) for ids in encoded["input_ids"]]

    counts = await engine.with_tokenizer(count)
    return {i for i, n in enumerate(counts) if n > engine.max_model_len}


def refuse(outcomes: Sequence[ItemOutcome], over: set[int]) -> list[ItemOutcome]:
    """`outcomes` with the texts at `over` failed as too long (an abandoned text stays so)."""
    return [
        ItemFailure(TEXT_TOO_LONG) if i in over and not isinstance(o, ItemAbandoned) else o
        for i, o in enumerate(outcomes)
    ]
