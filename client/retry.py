"""When to try a request again, and how long to wait first: 429 and 503 honour the server's
Retry-After (never less than the back-off's first step); a connection error (e.g. a server
restart) backs off exponentially. Both are bounded by a number of attempts and by a deadline:
no attempt starts more than max_total_wait_s after the first one did (time spent waiting for
answers counts)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from client.errors import CapserveError, ConnectionFailed, RateLimited, Unavailable


@dataclass(frozen=True)
class RetryPolicy:
    # Attempts in all, the first included (1: never retry).
    max_attempts: int = 5
    # No retry starts later than this after the first attempt started.
    max_total_wait_s: float = 60.0
    # Without Retry-After: backoff_s, then doubled each attempt, at most max_backoff_s.
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    retry_connection_errors: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.max_total_wait_s < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("max_total_wait_s, backoff_s and max_backoff_s must be >= 0")

    def retryable(self, error: CapserveError) -> bool:
        if isinstance(error, ConnectionFailed):
            return self.retry_connection_errors
        return isinstance(error, RateLimited | Unavailable)

    def delay_s(self, error: CapserveError, attempt: int) -> float:
        """The wait before attempt `attempt + 1` (attempt counts from 1)."""
        if error.retry_after_s is not None:
            return max(error.retry_after_s, self.backoff_s)  # Retry-After: 0 is no busy loop
        return min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))


@dataclass
class RetryState:
    """One request's attempts so far: `next_delay` says whether and how long to wait."""

    policy: RetryPolicy
    attempt: int = 1
    waited_s: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def next_delay(self, error: CapserveError) -> float | None:
        """The wait before the next attempt, or None: give up and raise `error`."""
        if not self.policy.retryable(error) or self.attempt >= self.policy.max_attempts:
            return None
        delay = self.policy.delay_s(error, self.attempt)
        # Time since the first attempt, answers awaited included (never less than the waits).
        elapsed = max(time.monotonic() - self.started, self.waited_s)
        if elapsed + delay > self.policy.max_total_wait_s:
            return None
        self.attempt += 1
        self.waited_s += delay
        return delay
