"""Usage per tenant (API key name or JWT subject; "anonymous" without auth): requests, texts,
and engine time.

A window's engine time (its processors' seconds) is shared out over its requests by their share
of the window's texts; a request the cache answered whole costs no engine time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.execution.observers import WindowReport


@dataclass
class TenantCounters:
    requests: int = 0
    texts: int = 0
    engine_seconds: float = 0.0


class TenantUsage:
    def __init__(self) -> None:
        self.tenants: dict[str, TenantCounters] = {}

    def _tenant(self, name: str) -> TenantCounters:
        return self.tenants.setdefault(name, TenantCounters())

    def request_finished(self, tenant: str, texts: int) -> None:
        counters = self._tenant(tenant)
        counters.requests += 1
        counters.texts += texts

    def window_finished(self, report: WindowReport) -> None:
        seconds = sum(report.outcome.seconds.values())
        total_texts = sum(report.request_texts)
        if seconds <= 0 or total_texts <= 0:
            return
        for tenant, texts in zip(report.tenants, report.request_texts, strict=True):
            self._tenant(tenant).engine_seconds += seconds * texts / total_texts

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "requests": c.requests,
                "texts": c.texts,
                "engine_seconds": round(c.engine_seconds, 3),
            }
            for name, c in sorted(self.tenants.items())
        }
