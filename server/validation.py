"""Checks a classification request against the server's limits, for every entry point.

Errors name the field and the text index, never the text itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.config import LimitsConfig


class RequestRejectedError(ValueError):
    """A well-formed request that breaks a limit or rule (HTTP 422)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def check_request(
    texts: Sequence[str],
    capabilities: Sequence[str],
    limits: LimitsConfig,
    text_field: str = "texts",
) -> None:
    """Raises RequestRejectedError for the first problem. `text_field="text"` names a single
    text as `text` rather than `texts[0]`."""

    def where(index: int) -> str:
        return text_field if text_field == "text" else f"{text_field}[{index}]"

    if not texts:
        raise RequestRejectedError(text_field, "at least one text is needed")
    if len(texts) > limits.max_texts_per_request:
        raise RequestRejectedError(
            text_field, f"{len(texts)} texts; at most {limits.max_texts_per_request} per request"
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestRejectedError(where(index), f"must be a string, not {type(text).__name__}")
        if not text.strip():
            raise RequestRejectedError(where(index), "is empty")
        if len(text) > limits.max_text_chars:
            raise RequestRejectedError(
                where(index), f"has {len(text)} characters; at most {limits.max_text_chars}"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RequestRejectedError(
                where(index), f"is not valid Unicode (character {exc.start} is a lone surrogate)"
            ) from None
    if not capabilities:
        raise RequestRejectedError("capabilities", "at least one capability is needed")
    if len(capabilities) > limits.max_capabilities_per_request:
        raise RequestRejectedError(
            "capabilities",
            f"{len(capabilities)} capabilities; at most {limits.max_capabilities_per_request}",
        )
    for index, name in enumerate(capabilities):
        if len(name) > limits.max_capability_name_chars:
            # The name itself is not echoed: only its position and length.
            raise RequestRejectedError(
                f"capabilities[{index}]",
                f"has {len(name)} characters; a capability name has at most "
                f"{limits.max_capability_name_chars}",
            )
