"""Replicas of one model's engine, with stand-ins for vLLM's AsyncLLM: each replica starts with
its own placement env, a text's calls all land on one replica (affinity), a slower replica sheds
load to the text's next one, and a dead replica is taken out and restarted alone while the
others answer every call, including the one it died under."""

from __future__ import annotations

import asyncio

from processors.engines import Engine
from processors.supervisor import EngineSpec, EngineSupervisor
from schemas.config import ModelConfig
from tests.unit.test_supervisor import FAST, StandInLauncher, StandInLLM, _until

ENVS = ({"VLLM_CPU_OMP_THREADS_BIND": "0"}, {"VLLM_CPU_OMP_THREADS_BIND": "1"})
MODEL = ModelConfig(source="x", runner="generate")


def _replicated(llms: int = 2) -> Engine:
    stand_ins = [StandInLLM(n) for n in range(llms)]
    for llm in stand_ins:
        llm.release.set()
    engine = Engine("llm", "generate", stand_ins[0], "tok", 128, 16)
    for llm in stand_ins[1:]:
        engine.add_replica(llm)
    return engine


async def test_each_replica_starts_with_its_own_placement_env() -> None:
    launcher = StandInLauncher()
    supervisor = EngineSupervisor({"llm": EngineSpec("llm", MODEL, "/m", ENVS)}, launcher, FAST)
    await supervisor.start()
    engine = supervisor.engines["llm"]
    assert [r.llm for r in engine.replicas] == launcher.llms
    assert launcher.envs == [dict(env) for env in ENVS]
    status = supervisor.states()["llm"]
    assert (status.state, status.replicas_up, status.replicas) == ("ready", 2, 2)
    assert [r.replica for r in supervisor.replica_states()["llm"]] == [0, 1]
    supervisor.stop()
    assert all(llm.shutdowns == 1 for llm in launcher.llms)


async def test_every_call_about_one_text_lands_on_the_same_replica() -> None:
    engine = _replicated()
    texts = [f"text {n}" for n in range(40)]
    for text in texts:
        for question in range(3):  # three questions about each text, one at a time
            await engine.generate([question], None, affinity=text)
    per_text_requests = [r.work.requests for r in engine.replicas]
    # Every text's 3 calls went to one replica, and the texts spread over both.
    assert sum(per_text_requests) == 120 and all(n % 3 == 0 for n in per_text_requests)
    assert min(per_text_requests) >= 30  # 40 texts by hash: both replicas get a fair part
    first: dict[str, int] = {}
    for text in texts:
        before = [r.work.requests for r in engine.replicas]
        await engine.generate([9], None, affinity=text)
        after = [r.work.requests for r in engine.replicas]
        first[text] = next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if b > a)
    again = []
    for text in texts:
        before = [r.work.requests for r in engine.replicas]
        await engine.generate([8], None, affinity=text)
        after = [r.work.requests for r in engine.replicas]
        again.append(next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if b > a))
    assert again == list(first.values())


async def test_a_slow_replica_sheds_texts_to_the_others() -> None:
    engine = _replicated()
    slow = engine.replicas[0].llm
    slow.release.clear()  # replica 0 never finishes: its calls pile up in flight
    calls = [asyncio.create_task(engine.generate([n], None, affinity=f"t{n}")) for n in range(60)]
    await asyncio.sleep(0.05)
    stuck = engine.replicas[0].work.in_flight
    # Without the bound about half (30) would wait on the slow replica; with it, a replica takes
    # a text only while it holds at most ceil(1.25 x (in flight + 1) / 2): here 2.
    assert 0 < stuck <= 2
    assert engine.replicas[1].work.requests == 60 - stuck
    slow.release.set()
    await asyncio.gather(*calls)
    assert engine.work.requests == 60


async def test_a_dead_replica_is_restarted_alone_and_its_calls_move_to_the_other() -> None:
    launcher = StandInLauncher()
    supervisor = EngineSupervisor({"llm": EngineSpec("llm", MODEL, "/m", ENVS)}, launcher, FAST)
    await supervisor.start()
    engine = supervisor.engines["llm"]
    launcher.llms[1].release.set()
    # A call in flight on replica 0 when it dies is answered by replica 1.
    key = next(f"t{n}" for n in range(100) if engine._pick(f"t{n}").index == 0)
    in_flight = asyncio.create_task(engine.generate([1, 2], None, affinity=key))
    await asyncio.sleep(0.01)
    launcher.llms[0].die()
    output = await asyncio.wait_for(in_flight, 2)
    assert output.prompt_token_ids == [1, 2] and engine.replicas[1].work.requests == 1

    await _until(lambda: supervisor.replica_states()["llm"][0].state == "restarting")
    status = supervisor.states()["llm"]
    assert (status.state, status.replicas_up) == ("ready", 1)  # degraded, still serving
    assert supervisor.replica_states()["llm"][1].state == "ready"
    for n in range(10):  # while replica 0 restarts, every call is answered by replica 1
        await asyncio.wait_for(engine.generate([n], None, affinity=f"t{n}"), 1)

    await _until(lambda: supervisor.replica_states()["llm"][0].state == "ready")
    assert supervisor.replica_states()["llm"][0].restarts == 1
    assert engine.replicas[0].llm is launcher.llms[2] and launcher.llms[0].shutdowns == 1
    assert launcher.envs[2] == ENVS[0]  # restarted on its own placement
    assert engine.replicas[1].llm is launcher.llms[1]  # the other one untouched
    supervisor.stop()
