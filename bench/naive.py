"""`capserve bench` (no --against, no --ablation): batched and naive mode side by side, in one
run, on the same engines: the naive-mode lever alone.

It starts a server (or uses --url, which must allow the X-Capserve-Batching header), warms it
up, then runs alternating phases (batched, naive, naive, batched, ...) of the same kind of
workload with fresh texts per phase, and reports throughput, latency, capability executions
and engine work for each mode, and their ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.phases import capserve_sender, difference, drive, read_capserve_counters
from bench.servers import ServerProcess, running, start_capserve, wait_healthy
from bench.sizes import NAIVE_DEFAULTS, Sizes, resolve_sizes
from bench.workload import make_workload

MODES = ("batched", "naive")


async def _phase(
    client: httpx.AsyncClient, mode: str, tag: str, args: argparse.Namespace, sizes: Sizes
) -> dict[str, Any]:
    workload = make_workload(args.seed, tag, sizes.requests, args.duplicate_rate, long=args.long)
    before = await read_capserve_counters(client)
    run = await drive(capserve_sender(client, mode), workload, sizes.clients)
    after = await read_capserve_counters(client)
    return {"mode": mode, **run.row(), **difference(after, before)}


def _sum(phases: list[dict[str, Any]], key: str) -> float:
    return float(sum(p[key] for p in phases))


def summarise(phases: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, dict[str, float]] = {}
    for mode in MODES:
        mine = [p for p in phases if p["mode"] == mode]
        keys = (
            "texts",
            "seconds",
            "capability_executions",
            "naive_equivalent_executions",
            "engine_prompts",
            "engine_prompt_tokens",
            "engine_cached_prompt_tokens",
            "failures",
        )
        totals[mode] = {key: _sum(mine, key) for key in keys}
        totals[mode]["texts_per_s"] = round(totals[mode]["texts"] / totals[mode]["seconds"], 2)
        computed = (
            totals[mode]["engine_prompt_tokens"] - totals[mode]["engine_cached_prompt_tokens"]
        )
        totals[mode]["engine_computed_prompt_tokens"] = computed
    b, n = totals["batched"], totals["naive"]

    def ratio(x: float, y: float) -> float | None:
        return round(x / y, 2) if y else None

    return {
        "totals": totals,
        "ratios": {
            "throughput_batched_over_naive": ratio(b["texts_per_s"], n["texts_per_s"]),
            "capability_executions_naive_over_batched": ratio(
                n["capability_executions"], b["capability_executions"]
            ),
            "engine_prompts_naive_over_batched": ratio(n["engine_prompts"], b["engine_prompts"]),
            "engine_computed_tokens_naive_over_batched": ratio(
                n["engine_computed_prompt_tokens"], b["engine_computed_prompt_tokens"]
            ),
        },
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [
        "| mode | phase | texts | s | texts/s | p50 ms | p95 ms | p99 ms | windows | cap execs "
        "| naive-equiv execs | engine prompts | prompt tokens | cached tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(result["phases"]):
        lat = p["latency_ms"]
        lines.append(
            f"| {p['mode']} | {i} | {p['texts']} | {p['seconds']} | {p['texts_per_s']} "
            f"| {lat['p50']} | {lat['p95']} | {lat['p99']} | {p['windows']} "
            f"| {p['capability_executions']} | {p['naive_equivalent_executions']} "
            f"| {p['engine_prompts']} | {p['engine_prompt_tokens']} "
            f"| {p['engine_cached_prompt_tokens']} |"
        )
    lines.append("")
    for mode, t in result["summary"]["totals"].items():
        lines.append(
            f"- {mode}: {t['texts_per_s']} texts/s, {t['capability_executions']:.0f} capability "
            f"executions, {t['engine_prompts']:.0f} engine prompts, "
            f"{t['engine_computed_prompt_tokens']:.0f} computed prompt tokens, "
            f"{t['failures']:.0f} failures"
        )
    for key, value in result["summary"]["ratios"].items():
        lines.append(f"- {key}: {value}")
    return "\n".join(lines)


async def _measure(args: argparse.Namespace, base_url: str, sizes: Sizes) -> dict[str, Any]:
    timeout = httpx.Timeout(600.0, connect=10.0)
    limits = httpx.Limits(max_connections=sizes.clients + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:
        for mode in MODES:  # warm-up: loads prompt prefixes and label embeddings
            workload = make_workload(args.seed, f"warm-{mode}", sizes.warmup_requests)
            await drive(capserve_sender(client, mode), workload, sizes.clients)
        phases = []
        for r in range(sizes.rounds):
            order = MODES if r % 2 == 0 else MODES[::-1]  # ABBA: neither mode always goes first
            for mode in order:
                phases.append(await _phase(client, mode, f"r{r}-{mode}", args, sizes))
                print(
                    f"phase {len(phases)}: {mode} {phases[-1]['texts_per_s']} texts/s", flush=True
                )
        stats = (await client.get("/stats")).json()
    return {"batching": stats["batching"], "phases": phases, "summary": summarise(phases)}


async def run_naive_comparison(args: argparse.Namespace) -> dict[str, Any]:
    sizes = resolve_sizes(args, NAIVE_DEFAULTS)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "sizes": vars(sizes),
    }
    if args.url is not None:
        return {**result, **await _measure(args, args.url, sizes)}
    log_path = Path(tempfile.gettempdir()) / f"capserve-bench-{os.getpid()}.log"
    server: ServerProcess = start_capserve(args.config, log_path)
    print(f"started a server on {server.url}; its log: {log_path}", flush=True)
    with running([server]):
        await wait_healthy([server], args.startup_timeout)
        return {**result, **await _measure(args, server.url, sizes)}
