"""What the server knows of each engine: up or not, and how often it was restarted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

EngineState = Literal["starting", "ready", "restarting", "failed", "stopped"]


@dataclass(frozen=True)
class EngineStatus:
    name: str
    state: EngineState
    # Restarts since the server started (after the engine died or failed its health check).
    restarts: int = 0
    # Why the engine was last taken out of service (an exception type, never text), if it was.
    last_error: str | None = None
    # The precision the engine computes in, once it has started.
    dtype: str | None = None
    # A replica's number; for a model's status (EngineStatus.of_replicas), None.
    replica: int | None = None
    # For a model's status: how many of its replicas serve, out of how many.
    replicas_up: int = 1
    replicas: int = 1

    @property
    def up(self) -> bool:
        return self.state == "ready"

    @classmethod
    def of_replicas(cls, replicas: Sequence[EngineStatus]) -> EngineStatus:
        """A model's status from its replicas': ready while any replica is (a dead replica
        degrades capacity, not the service); otherwise the first replica's state. Restarts are
        summed, and the last error is that of the last replica (by number) that has one."""
        first = replicas[0]
        up = sum(1 for r in replicas if r.up)
        errors = [r.last_error for r in replicas if r.last_error is not None]
        return cls(
            name=first.name,
            state="ready" if up else first.state,
            restarts=sum(r.restarts for r in replicas),
            last_error=errors[-1] if errors else None,
            dtype=next((r.dtype for r in replicas if r.dtype), None),
            replicas_up=up,
            replicas=len(replicas),
        )


@dataclass
class EngineWork:
    """Work sent to one engine since start: the honest measure of what batching saves."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    errors: int = 0
    # Requests at the engine now: sent and not yet ended or aborted (a cancelled caller's
    # generate()/encode() aborts its request in the engine).
    in_flight: int = 0


class EngineUnavailableError(Exception):
    """The engine a capability needs is not serving (starting, restarting after a crash, or
    stopped). Requests that need it get HTTP 503 `engine_unavailable` with Retry-After."""

    def __init__(self, engine: str, state: str = "restarting") -> None:
        self.engine = engine
        self.state = state
        super().__init__(f"engine '{engine}' is not available ({state}); retry later")
