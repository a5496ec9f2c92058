"""The two-level result cache: L1 in process first, then one L2 read for the L1 misses.

L2 hits are copied into L1. Writes go to both levels. Counters say how each level and each
capability fared.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from capabilities.results import CapabilityResult
from server.caching.codec import UnreadableValueError, decode_result, encode_result
from server.caching.keys import CacheKey
from server.caching.memory import MemoryStore
from server.caching.redis_store import RedisStore

log = logging.getLogger(__name__)


@dataclass
class HitCounters:
    hits: int = 0
    misses: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}


class ResultCache:
    def __init__(self, memory: MemoryStore, redis: RedisStore | None = None) -> None:
        self.memory = memory
        self.redis = redis
        self.l1 = HitCounters()
        self.l2 = HitCounters()
        # L1 misses not looked up in L2 because it was down (or is not configured).
        self.l2_skipped = 0
        self.l2_unreadable = 0
        self.writes = 0
        self.per_capability: dict[str, HitCounters] = {}

    async def get_many(self, keys: Iterable[CacheKey]) -> dict[CacheKey, CapabilityResult]:
        found: dict[CacheKey, CapabilityResult] = {}
        missing: list[CacheKey] = []
        for key in dict.fromkeys(keys):
            result = self.memory.get(key.value)
            if result is None:
                self.l1.misses += 1
                missing.append(key)
            else:
                self.l1.hits += 1
                found[key] = result
        if missing:
            found.update(await self._from_redis(missing))
        for key in found:
            self._counters(key.capability).hits += 1
        for key in missing:
            if key not in found:
                self._counters(key.capability).misses += 1
        return found

    async def _from_redis(self, keys: list[CacheKey]) -> dict[CacheKey, CapabilityResult]:
        values = None if self.redis is None else await self.redis.get_many([k.value for k in keys])
        if values is None:
            self.l2_skipped += len(keys)
            return {}
        found: dict[CacheKey, CapabilityResult] = {}
        for key in keys:
            data = values.get(key.value)
            result = None if data is None else self._decode(key, data)
            if result is None:
                self.l2.misses += 1
            else:
                self.l2.hits += 1
                found[key] = result
                self.memory.put(key.value, result)
        return found

    def _decode(self, key: CacheKey, data: bytes) -> CapabilityResult | None:
        try:
            result = decode_result(data)
        except UnreadableValueError as exc:
            self.l2_unreadable += 1
            log.warning("result cache: %s for capability '%s'; ignored", exc, key.capability)
            return None
        if result.capability != key.capability:
            self.l2_unreadable += 1
            return None
        return result

    async def put_many(self, items: Mapping[CacheKey, CapabilityResult]) -> None:
        if not items:
            return
        self.writes += len(items)
        self.memory.put_many({key.value: result for key, result in items.items()})
        if self.redis is not None:
            await self.redis.put_many(self._encode_all(items))

    def _encode_all(self, items: Mapping[CacheKey, CapabilityResult]) -> dict[str, bytes]:
        encoded = {}
        for key, result in items.items():
            try:
                encoded[key.value] = encode_result(result)
            except ValueError as exc:  # details that JSON cannot hold: kept in L1 only
                log.warning(
                    "result cache: capability '%s' gave a result JSON cannot hold (%s); "
                    "not stored in L2",
                    key.capability,
                    type(exc).__name__,
                )
        return encoded

    def _counters(self, capability: str) -> HitCounters:
        return self.per_capability.setdefault(capability, HitCounters())

    def snapshot(self) -> dict[str, Any]:
        return {
            "l1": {**self.l1.as_dict(), "entries": len(self.memory)},
            "l2": {
                **self.l2.as_dict(),
                "skipped": self.l2_skipped,
                "unreadable": self.l2_unreadable,
                **(self.redis.state() if self.redis else {"state": "off"}),
            },
            "writes": self.writes,
            "capabilities": {name: c.as_dict() for name, c in sorted(self.per_capability.items())},
        }

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()
