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

    @property
    def up(self) -> bool:
        return self.state == "ready"
