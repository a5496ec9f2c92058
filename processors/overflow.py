"""Texts longer than a model's context: cut to fit (`on_overflow: truncate`, the default) or
refused (`on_overflow: refuse`: the text gets a per-text error `text_too_long`)."""

from __future__ import annotations

from collections.abc import Sequence

# The failure reason of a refused text (ItemFailure.reason); the API maps it to text_too_long.
TEXT_TOO_LONG = "TextTooLongError"


class TextTooLongForModelError(Exception):
    """A text does not fit the model's context, and its capability refuses to truncate."""

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(f"the text has {tokens} tokens; the model takes at most {limit}")


def fit(token_ids: Sequence[int], room: int, refuse: bool) -> list[int]:
    """The text's tokens cut to `room` (its end dropped), or TextTooLongForModelError when
    `refuse` and they do not fit."""
    if len(token_ids) <= room:
        return list(token_ids)
    if refuse:
        raise TextTooLongForModelError(len(token_ids), room)
    return list(token_ids[: max(room, 0)])
