"""Bounded admission: at most `max_texts` texts accepted and not yet answered, across every
request. A request that would go over is refused at once (HTTP 503 with Retry-After), before any
work is queued for it; the texts of an admitted request are released when it ends, however it
ends (answered, failed, timed out, or its client gone).

Priorities keep headroom for `high`: a request of priority p is admitted only while the texts in
progress, its own included, stay within `shares[p]` of the capacity (high: the whole).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from server.batching.priority import Priority


class AdmissionRejectedError(Exception):
    """The server holds as much work as it admits; retry after `retry_after_s` seconds."""

    def __init__(self, texts: int, admitted: int, limit: int, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"the server is at capacity ({admitted} of {limit} texts in progress; this request "
            f"has {texts}): retry after {retry_after_s} s"
        )


@dataclass(frozen=True)
class AdmissionState:
    max_admitted_texts: int
    admitted_texts: int
    admitted_requests: int
    # Since start: requests admitted, and requests refused for capacity.
    accepted_total: int
    rejected_total: int


class AdmissionController:
    def __init__(
        self,
        max_texts: int,
        retry_after_s: int,
        shares: Mapping[Priority, float] | None = None,
    ) -> None:
        """`shares`: the share of `max_texts` each priority may fill (missing: the whole)."""
        if max_texts < 1:
            raise ValueError(f"max_texts must be >= 1, got {max_texts!r}")
        self.max_texts = max_texts
        self.retry_after_s = retry_after_s
        self._limits = {p: max(1, int(max_texts * s)) for p, s in (shares or {}).items()}
        self._texts = 0
        self._requests = 0
        self._accepted = 0
        self._rejected = 0

    def limit(self, priority: Priority) -> int:
        """The most texts in progress that a request of `priority` may bring the total to."""
        return self._limits.get(priority, self.max_texts)

    @contextmanager
    def admit(self, texts: int, priority: Priority = "normal") -> Iterator[None]:
        """Holds `texts` of capacity for the `with` block; raises AdmissionRejectedError when they
        do not fit. A request larger than its whole limit is admitted only when nothing else is
        in progress, so that it is never refused forever."""
        limit = self.limit(priority)
        if self._texts + texts > limit and self._texts > 0:
            self._rejected += 1
            raise AdmissionRejectedError(texts, self._texts, limit, self.retry_after_s)
        self._texts += texts
        self._requests += 1
        self._accepted += 1
        try:
            yield
        finally:
            self._texts -= texts
            self._requests -= 1

    def state(self) -> AdmissionState:
        return AdmissionState(
            self.max_texts, self._texts, self._requests, self._accepted, self._rejected
        )
