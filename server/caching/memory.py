"""L1: an in-process LRU of results with a time to live, checked on read."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

from capabilities.results import CapabilityResult


class MemoryStore:
    def __init__(
        self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        # key -> (expiry time, result); the least recently used first.
        self._entries: OrderedDict[str, tuple[float, CapabilityResult]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CapabilityResult | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, result = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return result

    def get_many(self, keys: Iterable[str]) -> dict[str, CapabilityResult]:
        found = {}
        for key in keys:
            result = self.get(key)
            if result is not None:
                found[key] = result
        return found

    def put(self, key: str, result: CapabilityResult) -> None:
        self._entries[key] = (self._clock() + self.ttl_s, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def put_many(self, items: Mapping[str, CapabilityResult]) -> None:
        for key, result in items.items():
            self.put(key, result)
