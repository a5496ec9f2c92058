"""CapabilityResult <-> JSON bytes, for L2. Every field of the dataclass round-trips; the text is
not part of a result, so a stored value never holds it."""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from capabilities.results import CapabilityResult

_ADAPTER: TypeAdapter[CapabilityResult] = TypeAdapter(CapabilityResult)


class UnreadableValueError(ValueError):
    """A stored value is not a CapabilityResult of this server's format."""


def encode_result(result: CapabilityResult) -> bytes:
    return _ADAPTER.dump_json(result)


def decode_result(data: bytes) -> CapabilityResult:
    try:
        return _ADAPTER.validate_json(data)
    except ValidationError as exc:
        # The message would quote the value: only say how many problems there were.
        raise UnreadableValueError(
            f"unreadable cached value ({exc.error_count()} errors)"
        ) from None
