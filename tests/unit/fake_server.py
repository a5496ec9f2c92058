"""`python -m tests.unit.fake_server PORT DELAY GRACE [fail]`: the real HTTP server (uvicorn, the
draining shutdown, the background start-up) on the classic capability set with a fake pool, for
tests of the process's start and signals without engines."""

from __future__ import annotations

import sys

from capabilities.registry import CapabilityRegistry
from schemas.config import CapServeConfig, LimitsConfig, ModelConfig, ServerConfig
from server.runtime import Runtime
from server.serving import serve
from tests.unit.fakes import CLASSIC_CAPABILITIES, SHIPPED_RUNNERS, FakePool, FakeProcessor


class FailingPool(FakePool):
    async def start(self) -> None:
        raise FileNotFoundError("model 'smollm2' is not prepared")


def main(argv: list[str]) -> int:
    port, delay, grace = int(argv[0]), float(argv[1]), float(argv[2])
    config = CapServeConfig(
        models={"smollm2": ModelConfig(source="x", runner="generate")},
        server=ServerConfig(port=port, shutdown_grace_s=grace, warmup=False),
        limits=LimitsConfig(request_timeout_s=60),
    )
    processor = FakeProcessor(delay=delay)
    pool = FailingPool(processor) if "fail" in argv[3:] else FakePool(processor)
    registry = CapabilityRegistry.from_directory(CLASSIC_CAPABILITIES, SHIPPED_RUNNERS)
    return serve(Runtime(config, registry, pool))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
