"""Bounded admission: at most `max_texts` texts accepted and not yet answered, across every
request. A request that would go over is refused at once (HTTP 503 with Retry-After), before any
work is queued for it; the texts of an admitted request are released when it ends, however it
ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


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
    def __init__(self, max_texts: int, retry_after_s: int) -> None:
        self.max_texts = max_texts
        self.retry_after_s = retry_after_s
        self._texts = 0
        self._requests = 0
        self._accepted = 0
        self._rejected = 0

    @contextmanager
    def admit(self, texts: int) -> Iterator[None]:
        """Holds `texts` of capacity for the `with` block; raises AdmissionRejectedError when they
        do not fit. A request larger than the whole capacity is admitted only when nothing else
        is in progress, so that it is never refused forever."""
        if self._texts + texts > self.max_texts and self._texts > 0:
            self._rejected += 1
            raise AdmissionRejectedError(texts, self._texts, self.max_texts, self.retry_after_s)
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
