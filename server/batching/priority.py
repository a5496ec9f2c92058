"""Request priorities: `high` goes first into the next window, `low` last."""

from __future__ import annotations

from schemas.api import Priority as Priority

PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")


def rank(priority: Priority) -> int:
    """The batcher's rank of a priority: 0 starts first."""
    return PRIORITIES.index(priority)
