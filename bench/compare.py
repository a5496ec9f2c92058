"""`capserve bench --against vllm-serve`: capserve and the `vllm serve` peer pipeline side by
side, in one run, on the same models, engine settings, workload and concurrency.

Both systems are started (capserve with its default levers; the peer: one `vllm serve` per
model) and warmed; then phases alternate in ABBA order (capserve, peer, peer, capserve, ...).
Only one system is loaded at a time, so the measured one has the cores; the idle one's CPU use
during each phase is measured and reported. Round r gives both systems the same requests
(fresh texts per round; the systems share no cache, so neither sees the other's work), which
makes their labels comparable text by text. At the end, answered requests are replayed one at
a time to capserve to measure its cache-hit latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.agreement import Answer, agreement, answer_of_result, merge_agreement
from bench.peer import PeerError, PeerPipeline
from bench.phases import (
    Send,
    SendError,
    capserve_sender,
    difference,
    drive,
    percentiles,
    read_capserve_counters,
    read_vllm_counters,
)
from bench.raw_limit import RoundWork, limit_jobs, limit_row, run_limit
from bench.report import compare_systems
from bench.servers import (
    CpuSplit,
    ServerProcess,
    running,
    start_capserve,
    start_peer_servers,
    wait_healthy,
)
from bench.sizes import Sizes, phase_workload, resolve_sizes, workload_label
from bench.workload import BenchRequest
from capabilities.registry import CapabilityRegistry
from processors.questions.standalone import StandaloneQuestions
from schemas.config import CapServeConfig
from server.registry_loading import model_fingerprints
from server.settings import load_config

CAPSERVE, PEER = "capserve", "vllm-serve"
SYSTEMS = (CAPSERVE, PEER)
Meter = Callable[[], Awaitable[dict[str, float]]]
IDLE_PROBE_S = 5.0


def abba(rounds: int) -> list[tuple[int, str]]:
    """(round, system) in ABBA order: neither system always goes first."""
    order: list[tuple[int, str]] = []
    for r in range(rounds):
        systems = SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]
        order += [(r, system) for system in systems]
    return order


def own_layout_registry(config: CapServeConfig) -> CapabilityRegistry:
    """The capabilities as a client of a plain completions server asks them: `own` layout."""
    prompting = config.prompting.model_copy(update={"layout_override": "own"})
    runners = {name: model.runner for name, model in config.models.items()}
    return CapabilityRegistry.from_directory(
        config.capabilities_dir, runners, model_fingerprints(config), prompting
    )


def peer_sender(peer: PeerPipeline) -> Send:
    async def send(item: BenchRequest) -> list[dict[str, Answer]]:
        try:
            per_text = await peer.classify(item.texts, item.capabilities)
        except PeerError as exc:
            raise SendError(str(exc)) from None
        return [{name: answer_of_result(r) for name, r in results.items()} for results in per_text]

    return send


async def cache_replay(client: httpx.AsyncClient, workload: list[BenchRequest]) -> dict[str, Any]:
    """Requests already answered, sent again one at a time: capserve's cache-hit latency as
    its responses report it (`latency_ms`), and how many were answered from the cache."""
    server_ms: list[float] = []
    client_ms: list[float] = []
    cached = failures = 0
    for item in workload:
        started = time.perf_counter()
        response = await client.post(
            "/classify", json={"texts": list(item.texts), "capabilities": list(item.capabilities)}
        )
        client_ms.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            failures += 1
            continue
        body = response.json()
        server_ms.append(float(body["latency_ms"]))
        cached += bool(body.get("cached"))
    return {
        "requests": len(workload),
        "cached": cached,
        "failures": failures,
        "server_latency_ms": percentiles(server_ms),
        "client_latency_ms": percentiles(client_ms),
    }


def _cpu(servers: list[ServerProcess]) -> float:
    return sum(server.cpu_seconds() for server in servers)


def _split(servers: list[ServerProcess]) -> CpuSplit:
    return sum((server.cpu_split() for server in servers), CpuSplit())


def cores_used(used: CpuSplit, client_s: float, idle_s: float, seconds: float) -> dict[str, float]:
    """Where the cores went during a phase: CPU seconds over the phase's seconds, for the
    measured system's server processes and engine processes, this load generator, and the idle
    system."""
    if seconds <= 0:
        return {}
    shares = {
        "front_end": used.front_end,
        "engines": used.engines,
        "client": client_s,
        "idle_system": idle_s,
    }
    return {name: round(cpu / seconds, 3) for name, cpu in shares.items()}


async def _idle_cores(systems: dict[str, list[ServerProcess]]) -> dict[str, float]:
    """CPU cores each started system uses while nobody sends it anything (over a few seconds)."""
    before = {name: _cpu(servers) for name, servers in systems.items()}
    await asyncio.sleep(IDLE_PROBE_S)
    return {
        name: round((_cpu(servers) - before[name]) / IDLE_PROBE_S, 3)
        for name, servers in systems.items()
    }


async def _measure(
    args: argparse.Namespace,
    sizes: Sizes,
    registry: CapabilityRegistry,
    capserve: ServerProcess,
    peers: dict[str, ServerProcess],
    questions: StandaloneQuestions,
) -> dict[str, Any]:
    timeout = httpx.Timeout(900.0, connect=10.0)
    limits = httpx.Limits(max_connections=sizes.clients + 4)
    async with httpx.AsyncClient(base_url=capserve.url, timeout=timeout, limits=limits) as ours:
        peer_clients = {
            name: httpx.AsyncClient(base_url=server.url, timeout=timeout, limits=limits)
            for name, server in peers.items()
        }
        try:
            peer = PeerPipeline(registry, questions, peer_clients)
            await peer.prepare()
            senders: dict[str, Send] = {CAPSERVE: capserve_sender(ours), PEER: peer_sender(peer)}

            async def peer_meter() -> dict[str, float]:
                counters = await read_vllm_counters(list(peer_clients.values()))
                usage = {f"usage_{k}": v for k, v in peer.usage.snapshot().items()}
                return {**counters, **usage}

            meters: dict[str, Meter] = {
                CAPSERVE: lambda: read_capserve_counters(ours),
                PEER: peer_meter,
            }
            idle = {CAPSERVE: list(peers.values()), PEER: [capserve]}
            measured = {CAPSERVE: [capserve], PEER: list(peers.values())}
            for system in SYSTEMS:  # warm-up: prompt prefixes, label embeddings, code paths
                warm = phase_workload(args, registry, "warm", sizes.warmup_requests)
                await drive(senders[system], warm, sizes.clients)
            idle_cores = await _idle_cores({PEER: idle[CAPSERVE], CAPSERVE: idle[PEER]})
            phases: list[dict[str, Any]] = []
            answers = {}
            workloads = {}
            for r, system in abba(sizes.rounds):
                workload = workloads[r] = phase_workload(args, registry, f"r{r}", sizes.requests)
                before, idle_before = await meters[system](), _cpu(idle[system])
                split_before, client_before = _split(measured[system]), time.process_time()
                run = await drive(senders[system], workload, sizes.clients)
                split_after, client_after = _split(measured[system]), time.process_time()
                after, idle_after = await meters[system](), _cpu(idle[system])
                cores = cores_used(
                    split_after - split_before,
                    client_after - client_before,
                    idle_after - idle_before,
                    run.seconds,
                )
                answers[(r, system)] = run.answers
                phases.append(
                    {
                        "round": r,
                        "system": system,
                        **run.row(),
                        **difference(after, before),
                        "idle_system_cpu_s": round(idle_after - idle_before, 2),
                        "cores_used": cores,
                        "samples": run.latencies_ms,
                    }
                )
                print(
                    f"round {r} {system}: {phases[-1]['texts_per_s']} texts/s, "
                    f"{run.failures} failures",
                    flush=True,
                )
            replay = phase_workload(args, registry, "r0", sizes.requests)[: sizes.cache_replays]
            cache = await cache_replay(ours, replay) if replay else None
        finally:
            for client in peer_clients.values():
                await client.aclose()
    per_round = [agreement(answers[(r, CAPSERVE)], answers[(r, PEER)]) for r in range(sizes.rounds)]
    summary = compare_systems(phases, CAPSERVE, PEER)
    for phase in phases:
        del phase["samples"]  # pooled into the summary
    limit_work = [  # what the offline engines run once the servers stop (--limit)
        (phase["seconds"], limit_jobs(registry, questions, workloads[r], answers[(r, CAPSERVE)]))
        for r, phase in ((p["round"], p) for p in phases if p["system"] == CAPSERVE)
        if args.limit
    ]
    return {
        "limit_work": limit_work,
        "idle_cpu_cores": idle_cores,
        "phases": phases,
        "summary": summary,
        "agreement": merge_agreement(per_round),
        "cache_replay": cache,
    }


def _raw_limit(config_path: Path | None, rounds: list[tuple[float, RoundWork]]) -> dict[str, Any]:
    """Each capserve round's engine work on the offline engines (bench.raw_limit)."""
    rows = []
    for seconds, work in rounds:
        rows.append(limit_row(seconds, work, run_limit(config_path, work.jobs)))
        print(f"raw limit: {rows[-1]['fraction_of_limit']} of it in capserve", flush=True)
    limit_s = sum(row["limit_seconds"] for row in rows)
    capserve_s = sum(row["capserve_seconds"] for row in rows)
    return {
        "rounds": rows,
        "fraction_of_limit": round(limit_s / capserve_s, 3) if capserve_s else None,
        "engines": "vLLM offline LLM.embed / LLM.generate, one model at a time, same engine "
        "arguments, dtype and core binding; prompts in the own layout",
    }


async def run_comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Starts both systems, measures them, and stops every process it started."""
    config = load_config(args.config)
    registry = own_layout_registry(config)
    questions = StandaloneQuestions.from_config(config, registry)
    sizes = resolve_sizes(args)
    log_dir = Path(tempfile.mkdtemp(prefix="capserve-bench-"))
    print(f"starting capserve and the vllm-serve peer; logs in {log_dir}", flush=True)
    started = time.perf_counter()
    capserve = start_capserve(args.config, log_dir / "capserve.log")
    servers = [capserve]
    with running(servers):
        peers = start_peer_servers(config, log_dir)
        servers += peers.values()
        await wait_healthy(servers, args.startup_timeout)
        print(f"all healthy after {time.perf_counter() - started:.0f} s", flush=True)
        measured = await _measure(args, sizes, registry, capserve, peers, questions)
    limit_work = measured.pop("limit_work")
    if args.limit:  # after every server stopped: the offline engines get the cores alone
        measured["limit"] = await asyncio.to_thread(_raw_limit, args.config, limit_work)
    return {
        "against": args.against,
        "workload": workload_label(args),
        "duplicate_rate": args.duplicate_rate,
        "sizes": vars(sizes),
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        # Each server's process group (its pid) and address, during the run.
        "servers": {s.name: {"pid": s.process.pid, "url": s.url} for s in servers},
        "peer": {
            "layout": "own (capserve's prompts as token ids)",
            "calls": "per request and dependency level: one /v1/completions per LLM for its "
            "questions, one per LLM and llm_json schema (structured outputs); "
            "one /v1/embeddings per embedding model; conditions, rules, formulas, regex, "
            "heads and taxonomy routing in the client",
        },
        **measured,
    }
