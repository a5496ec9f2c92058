"""`capserve bench --ablation`: what each of capserve's levers is worth.

The same workload runs on capserve with every lever on, and with each lever off in turn (one
server per configuration, started with env overrides, one at a time so the measured server has
the cores). The all-on configuration runs first and last, so drift over the run shows; its first
server also runs the same-shaped workload in naive mode (each request on its own: no window,
no cross-request merging), the lever `capserve bench` without options measures.

`--core-binding` runs the same harness over core bindings instead of levers: the engines'
OpenMP threads on every core (`engine_env.cpu_omp_threads_bind: all`, the default) against
vLLM's own split (`auto`: one core reserved for the front end), and every core with OpenMP
threads that sleep as soon as they are idle (`engine_env.omp_wait_policy: passive`), in the
servers' order ABCCBA.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.phases import capserve_sender, difference, drive, read_capserve_counters
from bench.report import summarise_ablation
from bench.servers import running, start_capserve, wait_healthy
from bench.sizes import Sizes, phase_workload, resolve_sizes, workload_label
from capabilities.registry import CapabilityRegistry
from server.registry_loading import model_fingerprints
from server.settings import load_config

LEVERS: dict[str, dict[str, str]] = {
    "all_on": {},
    "window_off": {"CAPSERVE__BATCHING__WINDOW_MS": "0", "CAPSERVE__BATCHING__ADAPTIVE": "false"},
    "slot_release_off": {"CAPSERVE__BATCHING__RELEASE_SLOT_ON_SUBMIT": "false"},
    "dedup_off": {"CAPSERVE__BATCHING__DEDUP": "false"},
    "shared_layout_off": {"CAPSERVE__PROMPTING__LAYOUT_OVERRIDE": "own"},
    "cache_off": {"CAPSERVE__CACHE__ENABLED": "false"},
}
DESCRIPTIONS = {
    "all_on": "nothing",
    "window_off": "window (window_ms 0, adaptive false)",
    "slot_release_off": "a window's slot freed at submission (held to its end)",
    "dedup_off": "dedup of identical texts",
    "shared_layout_off": "shared question layout (own)",
    "cache_off": "result cache",
    "naive": "batching: each request on its own (X-Capserve-Batching: naive)",
}
SCHEDULE = (
    "all_on",
    "window_off",
    "slot_release_off",
    "dedup_off",
    "shared_layout_off",
    "cache_off",
    "all_on",
)


@dataclass(frozen=True)
class Study:
    """What an ablation compares: a configuration (env overrides) per name, the servers' order
    (the first name is the baseline), and whether the first server also runs naive mode."""

    levers: dict[str, dict[str, str]]
    descriptions: dict[str, str]
    schedule: tuple[str, ...]
    naive_on_first: bool


LEVER_STUDY = Study(LEVERS, DESCRIPTIONS, SCHEDULE, naive_on_first=True)
BINDING_STUDY = Study(
    levers={
        "bind_all": {"CAPSERVE__ENGINE_ENV__CPU_OMP_THREADS_BIND": "all"},
        "bind_vllm_auto": {"CAPSERVE__ENGINE_ENV__CPU_OMP_THREADS_BIND": "auto"},
        "bind_all_passive": {
            "CAPSERVE__ENGINE_ENV__CPU_OMP_THREADS_BIND": "all",
            "CAPSERVE__ENGINE_ENV__OMP_WAIT_POLICY": "passive",
        },
    },
    descriptions={
        "bind_all": "every engine's OpenMP threads on every core (the default)",
        "bind_vllm_auto": "vLLM's own binding: one core reserved for the front end",
        "bind_all_passive": "every core, OpenMP threads sleep at once when idle (OMP_WAIT_POLICY)",
    },
    schedule=(
        "bind_all",
        "bind_vllm_auto",
        "bind_all_passive",
        "bind_all_passive",
        "bind_vllm_auto",
        "bind_all",
    ),
    naive_on_first=False,
)
NAIVE = "naive"


def _registry(args: argparse.Namespace) -> CapabilityRegistry:
    config = load_config(args.config)
    runners = {name: model.runner for name, model in config.models.items()}
    return CapabilityRegistry.from_directory(
        config.capabilities_dir, runners, model_fingerprints(config), config.prompting
    )


async def _one_server(
    args: argparse.Namespace,
    sizes: Sizes,
    registry: CapabilityRegistry,
    study: Study,
    index: int,
    lever: str,
    log_dir: Path,
) -> list[dict[str, Any]]:
    server = start_capserve(args.config, log_dir / f"{index}-{lever}.log", study.levers[lever])
    timeout = httpx.Timeout(900.0, connect=10.0)
    limits = httpx.Limits(max_connections=sizes.clients + 4)
    phases: list[dict[str, Any]] = []
    with running([server]):
        await wait_healthy([server], args.startup_timeout)
        async with httpx.AsyncClient(base_url=server.url, timeout=timeout, limits=limits) as client:
            warm = phase_workload(args, registry, "warm", sizes.warmup_requests)
            await drive(capserve_sender(client), warm, sizes.clients)
            runs: list[tuple[str, str | None, str]] = [
                (lever, None, f"r{r}") for r in range(sizes.rounds)
            ]
            if study.naive_on_first and index == 0:
                runs += [(NAIVE, NAIVE, f"r{r}-naive") for r in range(sizes.rounds)]
            for configuration, mode, tag in runs:
                workload = phase_workload(args, registry, tag, sizes.requests)
                before = await read_capserve_counters(client)
                run = await drive(capserve_sender(client, mode), workload, sizes.clients)
                after = await read_capserve_counters(client)
                phases.append(
                    {
                        "configuration": configuration,
                        "server": index,
                        "tag": tag,
                        **run.row(),
                        **difference(after, before),
                        "samples": run.latencies_ms,
                    }
                )
                print(
                    f"server {index} {configuration} {tag}: {phases[-1]['texts_per_s']} texts/s, "
                    f"{run.failures} failures",
                    flush=True,
                )
    return phases


async def run_ablation(args: argparse.Namespace) -> dict[str, Any]:
    study = BINDING_STUDY if args.core_binding else LEVER_STUDY
    registry = _registry(args)
    sizes = resolve_sizes(args)
    log_dir = Path(tempfile.mkdtemp(prefix="capserve-ablation-"))
    print(f"ablation: {len(study.schedule)} servers in turn; logs in {log_dir}", flush=True)
    started = time.perf_counter()
    phases: list[dict[str, Any]] = []
    for index, lever in enumerate(study.schedule):
        phases += await _one_server(args, sizes, registry, study, index, lever, log_dir)
    configurations = [*study.levers, *([NAIVE] if study.naive_on_first else [])]
    summary = summarise_ablation(phases, configurations, baseline=study.schedule[0])
    for phase in phases:
        del phase["samples"]
    return {
        "workload": workload_label(args),
        "duplicate_rate": args.duplicate_rate,
        "sizes": vars(sizes),
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "schedule": list(study.schedule),
        "levers": study.levers,
        "descriptions": study.descriptions,
        "phases": phases,
        "summary": summary,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
