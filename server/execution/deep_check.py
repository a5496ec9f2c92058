"""The deep health check: a tiny real classification through each engine, and the result
cache's state. The runtime runs the probes; this module picks them and shapes the outcome."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from capabilities.registry import CapabilityRegistry


@dataclass(frozen=True)
class EngineProbe:
    """One engine's probe: the capability it ran, and what came of it."""

    engine: str
    capability: str | None
    ok: bool
    # Why it failed (exception types and capability names, never text), or None.
    error: str | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class CacheProbe:
    enabled: bool
    # The Redis L2's last known state: "up", "down", or "off" (none configured).
    l2: str

    @property
    def ok(self) -> bool:
        return self.l2 != "down"


@dataclass(frozen=True)
class DeepCheck:
    engines: dict[str, EngineProbe]
    cache: CacheProbe

    @property
    def ok(self) -> bool:
        return self.cache.ok and all(probe.ok for probe in self.engines.values())


def probe_capabilities(
    registry: CapabilityRegistry, engines: Iterable[str]
) -> dict[str, str | None]:
    """For each engine, the capability of the registry in force that runs on it with the fewest
    dependencies (then by name), or None when no capability uses it."""
    chosen: dict[str, str | None] = {}
    for engine in engines:
        candidates = [spec for spec in registry.specs() if spec.model == engine]
        best = min(candidates, key=lambda s: (len(s.depends_on), s.name), default=None)
        chosen[engine] = None if best is None else best.name
    return chosen


def cache_probe(snapshot: Mapping[str, Any] | None) -> CacheProbe:
    """The result cache's state from its snapshot (None: the cache is off)."""
    if snapshot is None:
        return CacheProbe(enabled=False, l2="off")
    l2 = snapshot.get("l2", {})
    return CacheProbe(enabled=True, l2=str(l2.get("state", "off")))
