"""What the pipeline asks of the cache: results by (capability, text), and storing new ones.

Turns pairs into keys (each text hashed once, each capability's closure fingerprinted once per
call) and leaves out the capabilities configured as never cached.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from server.caching.keys import CacheKey, CacheKeys
from server.caching.result_cache import ResultCache

# (capability name, text)
Pair = tuple[str, str]


class ResultLookup:
    def __init__(self, keys: CacheKeys, cache: ResultCache, exclude: Collection[str] = ()) -> None:
        self.keys = keys
        self.cache = cache
        self.exclude = frozenset(exclude)

    def for_registry(self, registry: CapabilityRegistry) -> ResultLookup:
        """The lookup of another capability set: same storage, keys by `registry`'s versions."""
        return ResultLookup(self.keys.for_registry(registry), self.cache, self.exclude)

    def cacheable(self, capability: str) -> bool:
        return capability not in self.exclude

    def _keyed(self, pairs: Iterable[Pair]) -> dict[CacheKey, Pair]:
        fingerprints: dict[str, str] = {}
        digests: dict[str, str] = {}
        keyed: dict[CacheKey, Pair] = {}
        for capability, text in pairs:
            if not self.cacheable(capability):
                continue
            fingerprint = fingerprints.get(capability)
            if fingerprint is None:
                fingerprint = fingerprints[capability] = self.keys.closure_fingerprint(capability)
            digest = digests.get(text)
            if digest is None:
                digest = digests[text] = self.keys.text_digest(text)
            keyed[self.keys.compose(capability, fingerprint, digest)] = (capability, text)
        return keyed

    async def find(self, pairs: Iterable[Pair]) -> dict[Pair, CapabilityResult]:
        """The cached results among `pairs`."""
        keyed = self._keyed(pairs)
        if not keyed:
            return {}
        found = await self.cache.get_many(keyed)
        return {keyed[key]: result for key, result in found.items()}

    async def store(self, results: Mapping[Pair, CapabilityResult]) -> None:
        keyed = self._keyed(results)
        await self.cache.put_many({key: results[pair] for key, pair in keyed.items()})

    def snapshot(self) -> dict[str, Any]:
        return {**self.cache.snapshot(), "exclude": sorted(self.exclude)}

    async def close(self) -> None:
        await self.cache.close()
