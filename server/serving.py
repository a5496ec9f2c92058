"""Runs the app under uvicorn: a background start-up, and a bounded, draining shutdown.

On SIGTERM (or SIGINT) the server stops listening, lets the windows in flight finish within
`server.shutdown_grace_s` (the rest get 503 shutting_down), stops the engines, and exits 0.
A failed start-up (missing model, failed warm-up) exits 1.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator

import uvicorn

from server.api.app import create_app
from server.runtime import Runtime

# After the drain every request has its answer: connections get this long to send it.
RESPONSE_MARGIN_S = 5.0
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's handlers, but a handled SIGTERM is not raised again after the shutdown:
        a drained server exits 0."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # stop accepting connections first
            server.close()
        await self.runtime.drain()
        await super().shutdown(sockets)


def serve(runtime: Runtime) -> int:
    """Serves until a signal; returns the exit code (1 when the start-up failed)."""
    failures: list[BaseException] = []
    server: DrainingServer | None = None

    def start_failed(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    settings = runtime.config.server
    app = create_app(runtime, start_in_background=True, on_start_failed=start_failed)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # our logging (configure_logging), uvicorn's lines included
        access_log=False,  # replaced by server/api/access_log.py
        timeout_graceful_shutdown=int(RESPONSE_MARGIN_S),
    )
    server = DrainingServer(config, runtime)
    server.run()
    return 1 if failures else 0
