"""What the server knows of each engine: up or not, and how often it was restarted."""

from __future__ import annotations

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

    @property
    def up(self) -> bool:
        return self.state == "ready"


class EngineUnavailableError(Exception):
    """The engine a capability needs is not serving (starting, restarting after a crash, or
    stopped). Requests that need it get HTTP 503 `engine_unavailable` with Retry-After."""

    def __init__(self, engine: str, state: str = "restarting") -> None:
        self.engine = engine
        self.state = state
        super().__init__(f"engine '{engine}' is not available ({state}); retry later")
