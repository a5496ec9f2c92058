"""The supervisor's mechanics, with a stand-in for vLLM's AsyncLLM: a dead engine is taken out
of service at once (calls raise EngineUnavailableError, no hang), restarted with doubling backoff
under the same Engine object, and its dead AsyncLLM is closed even if that raises. The real
engine-kill test is tests/integration/test_engine_failure.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from processors.engine_status import EngineUnavailableError
from processors.engines import Engine
from processors.supervisor import EngineSpec, EngineSupervisor
from schemas.config import ModelConfig, SupervisorConfig


class EngineDeadError(Exception):
    """Named as vLLM's: what its calls and check_health raise once the core process died."""


class StandInLLM:
    def __init__(self, number: int) -> None:
        self.number = number
        self.dead = False
        self.shutdowns = 0
        self.model_config = SimpleNamespace(max_model_len=128, dtype="torch.bfloat16")
        self.vllm_config = SimpleNamespace(cache_config=SimpleNamespace(block_size=16))
        self.release = asyncio.Event()

    @property
    def errored(self) -> bool:
        return self.dead

    async def check_health(self) -> None:
        if self.dead:
            raise EngineDeadError()

    async def generate(self, prompt: Any, params: Any, request_id: str) -> AsyncIterator[Any]:
        await self.release.wait()  # "runs" until released or the core dies
        if self.dead:
            raise EngineDeadError()
        yield SimpleNamespace(prompt_token_ids=prompt["prompt_token_ids"], num_cached_tokens=0)

    def get_tokenizer(self) -> str:
        return f"tokenizer-{self.number}"

    def shutdown(self) -> None:
        self.shutdowns += 1
        if self.dead:
            raise RuntimeError("closing a dead engine's sockets failed")

    def die(self) -> None:
        self.dead = True
        self.release.set()


class StandInLauncher:
    def __init__(self, failures_before_restart: int = 0) -> None:
        self.llms: list[StandInLLM] = []
        self.failures_left = failures_before_restart
        self.attempts: list[float] = []
        self.envs: list[dict[str, str]] = []

    def launch(
        self, name: str, model: ModelConfig, path: str, env: Mapping[str, str] | None = None
    ) -> StandInLLM:
        self.envs.append(dict(env or {}))
        self.attempts.append(time.monotonic())
        if self.llms and self.failures_left > 0:
            self.failures_left -= 1
            raise OSError("no memory for the engine")
        llm = StandInLLM(len(self.llms))
        self.llms.append(llm)
        return llm

    def create(
        self, name: str, model: ModelConfig, path: str, env: Mapping[str, str] | None = None
    ) -> Engine:
        llm = self.launch(name, model, path, env)
        return Engine(name, model.runner, llm, llm.get_tokenizer(), 128, 16)


SPECS = {"smollm2": EngineSpec("smollm2", ModelConfig(source="x", runner="generate"), "/m")}
FAST = SupervisorConfig(health_interval_s=0.02, restart_backoff_s=0.05, max_restart_backoff_s=0.2)


async def _until(condition: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_dead_engine_is_restarted_under_the_same_handle() -> None:
    launcher = StandInLauncher()
    started = []
    supervisor = EngineSupervisor(SPECS, launcher, FAST, on_started=lambda: started.append(1))
    await supervisor.start()
    engine = supervisor.engines["smollm2"]
    assert supervisor.states()["smollm2"].state == "ready" and started == [1]

    in_flight = asyncio.create_task(engine.generate([1, 2, 3], None))
    await asyncio.sleep(0.01)
    launcher.llms[0].die()
    with pytest.raises(EngineUnavailableError):  # mid-call death: unavailable, not a 500
        await in_flight

    await _until(lambda: supervisor.states()["smollm2"].state == "restarting")
    assert supervisor.states()["smollm2"].last_error == "EngineDeadError"
    with pytest.raises(EngineUnavailableError, match="restarting"):  # at once, no hang
        await asyncio.wait_for(engine.generate([1], None), 0.5)

    await _until(lambda: supervisor.states()["smollm2"].state == "ready")
    status = supervisor.states()["smollm2"]
    assert status.restarts == 1 and started == [1, 1]
    assert supervisor.engines["smollm2"] is engine  # processors keep their Engine
    assert engine.llm is launcher.llms[1] and launcher.llms[0].shutdowns == 1
    launcher.llms[1].release.set()
    output = await engine.generate([4, 5], None)
    assert output.prompt_token_ids == [4, 5] and engine.work.requests == 1
    supervisor.stop()
    assert supervisor.states()["smollm2"].state == "stopped"


async def test_failed_restarts_back_off_doubling_up_to_the_maximum() -> None:
    launcher = StandInLauncher(failures_before_restart=4)
    supervisor = EngineSupervisor(SPECS, launcher, FAST)
    await supervisor.start()
    launcher.llms[0].die()
    await _until(lambda: supervisor.states()["smollm2"].state == "failed")
    await _until(lambda: supervisor.states()["smollm2"].state == "ready")
    gaps = [b - a for a, b in zip(launcher.attempts[1:], launcher.attempts[2:], strict=False)]
    # Waits of 0.1, 0.2, 0.2, 0.2 s after the first failed attempt (doubling, capped at 0.2):
    # never shorter; longer only by scheduling delays, well below the uncapped 0.4 and 0.8.
    assert len(gaps) == 4
    assert all(gap >= want - 0.01 for gap, want in zip(gaps, [0.1, 0.2, 0.2, 0.2], strict=True))
    assert gaps[0] < 0.2 and max(gaps[2:]) < 0.38
    assert supervisor.states()["smollm2"].restarts == 1
    supervisor.stop()


async def test_stop_ends_a_restart_in_progress() -> None:
    launcher = StandInLauncher()
    slow = SupervisorConfig(health_interval_s=0.02, restart_backoff_s=30)
    supervisor = EngineSupervisor(SPECS, launcher, slow)
    await supervisor.start()
    launcher.llms[0].die()
    await _until(lambda: supervisor.states()["smollm2"].state == "restarting")
    supervisor.stop()
    await asyncio.sleep(0.05)
    assert len(launcher.llms) == 1  # no engine started after the stop
    assert supervisor.states()["smollm2"].state == "stopped"
