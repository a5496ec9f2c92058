"""`capserve bench-window`: the adaptive window at both ends of the load, on real servers.

1. Idle: single-text requests sent one at a time, to a server with the adaptive window and to
   one with no window at all (`window_ms: 0`, `adaptive: false`): what the window adds to a
   request's latency when nothing else runs.
2. Saturated: the mixed workload of `bench.workload` from closed-loop clients (32), to a server
   with the adaptive window and to one with the fixed window (`adaptive: false`): throughput
   and latency.

Each setting is its own server, started with `CAPSERVE__BATCHING__*` overrides and the result
cache off (so that only the window differs), one at a time so that the measured server has the
cores. Phases run in ABBA order (A B B A for each kind), and the two phases of each pair use the
same texts on different servers, so neither setting always goes first or gets easier texts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.run import write_result
from bench.servers import start_capserve
from bench.workload import BenchRequest, make_workload
from server.observability.stats import LatencySamples

# The batching settings compared (env overrides of the `batching` section).
SETTINGS: dict[str, dict[str, str]] = {
    "adaptive": {"ADAPTIVE": "true"},
    "no_window": {"ADAPTIVE": "false", "WINDOW_MS": "0"},
    "fixed": {"ADAPTIVE": "false"},
}


@dataclass(frozen=True)
class Phase:
    kind: str  # "idle" | "saturated"
    setting: str
    texts_from: int  # the pair of phases that share texts


# One server per entry, in order; each runs its phases in order. Both kinds run A B B A.
SCHEDULE: tuple[tuple[str, tuple[Phase, ...]], ...] = (
    ("adaptive", (Phase("idle", "adaptive", 0), Phase("saturated", "adaptive", 0))),
    ("no_window", (Phase("idle", "no_window", 0), Phase("idle", "no_window", 1))),
    ("fixed", (Phase("saturated", "fixed", 0), Phase("saturated", "fixed", 1))),
    ("adaptive", (Phase("saturated", "adaptive", 1), Phase("idle", "adaptive", 1))),
)
COMPARED = {"idle": ("adaptive", "no_window"), "saturated": ("adaptive", "fixed")}


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=128, help="requests per saturated phase")
    parser.add_argument("--idle-requests", type=int, default=40, help="requests per idle phase")
    parser.add_argument("--clients", type=int, default=32, help="clients of a saturated phase")
    parser.add_argument(
        "--window-ms", type=float, default=100.0, help="window_ms of the adaptive and fixed servers"
    )
    parser.add_argument("--duplicate-rate", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--startup-timeout", type=float, default=900.0)


@contextmanager
def _server_process(
    args: argparse.Namespace, setting: str, log_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `capserve serve` subprocess with the setting's batching; stopped on the way out."""
    overrides = {
        "CAPSERVE__CACHE__ENABLED": "false",
        "CAPSERVE__BATCHING__MODE": "batched",
        "CAPSERVE__BATCHING__WINDOW_MS": str(args.window_ms),
        **{f"CAPSERVE__BATCHING__{key}": value for key, value in SETTINGS[setting].items()},
    }
    server = start_capserve(args.config, log_path, overrides, name=setting)
    try:
        yield server.url, server.process
    finally:
        server.stop()


async def _until_healthy(
    client: httpx.AsyncClient, process: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server was not healthy after {timeout:.0f} s")
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the server exited with code {process.returncode} while starting")


def idle_workload(seed: int, pair: int, requests: int) -> list[BenchRequest]:
    """Single-text requests with texts no other request holds (no result to reuse)."""
    mixed = make_workload(seed, f"idle{pair}", requests, duplicate_rate=0.0)
    return [BenchRequest(item.texts[:1], item.capabilities) for item in mixed]


def percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    samples = LatencySamples(keep=max(1, len(values_ms)))
    samples.extend(values_ms)
    return samples.percentiles()


async def _send(
    client: httpx.AsyncClient, item: BenchRequest, client_ms: list[float], server_ms: list[float]
) -> bool:
    """One request; its latency as the client saw it and as the server reported it (ms)."""
    started = time.perf_counter()
    response = await client.post(
        "/classify", json={"texts": list(item.texts), "capabilities": list(item.capabilities)}
    )
    client_ms.append((time.perf_counter() - started) * 1000)
    if response.status_code != 200:
        return False
    server_ms.append(float(response.json()["latency_ms"]))
    return True


async def _windows(client: httpx.AsyncClient) -> int:
    stats = (await client.get("/stats")).json()
    return int(stats["batching"]["state"]["batched"]["windows_dispatched"])


async def _run_phase(
    client: httpx.AsyncClient, workload: Sequence[BenchRequest], clients: int
) -> dict[str, Any]:
    """`clients` closed-loop clients share the workload (one client: one request at a time)."""
    queue = list(reversed(workload))
    client_ms: list[float] = []
    server_ms: list[float] = []
    failures = 0

    async def one_client() -> None:
        nonlocal failures
        while queue:
            if not await _send(client, queue.pop(), client_ms, server_ms):
                failures += 1

    windows_before = await _windows(client)
    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    windows = await _windows(client) - windows_before
    texts = sum(len(item.texts) for item in workload)
    return {
        "requests": len(workload),
        "texts": texts,
        "failures": failures,
        "seconds": round(seconds, 3),
        "texts_per_s": round(texts / seconds, 2),
        "windows": windows,
        "requests_per_window": round(len(workload) / windows, 2) if windows else None,
        "client_latency_ms": percentiles(client_ms),
        "server_latency_ms": percentiles(server_ms),
        "samples": {"client": client_ms, "server": server_ms},
    }


def _workload(args: argparse.Namespace, phase: Phase) -> tuple[list[BenchRequest], int]:
    if phase.kind == "idle":
        return idle_workload(args.seed, phase.texts_from, args.idle_requests), 1
    mixed = make_workload(args.seed, f"sat{phase.texts_from}", args.requests, args.duplicate_rate)
    return mixed, args.clients


async def _serve_phases(
    args: argparse.Namespace, index: int, setting: str, phases: Sequence[Phase]
) -> list[dict[str, Any]]:
    log_path = Path(tempfile.gettempdir()) / f"capserve-bench-window-{os.getpid()}-{index}.log"
    print(f"server {index}: {setting}; its log: {log_path}", flush=True)
    timeout = httpx.Timeout(600.0, connect=10.0)
    limits = httpx.Limits(max_connections=args.clients + 2)
    results = []
    with _server_process(args, setting, log_path) as (url, process):
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
            await _until_healthy(client, process, args.startup_timeout)
            # The same warm-up on every server: instruction prefixes and label embeddings.
            await _run_phase(client, make_workload(args.seed, f"warm{index}", 16), 8)
            for phase in phases:
                workload, clients = _workload(args, phase)
                result = await _run_phase(client, workload, clients)
                results.append({"kind": phase.kind, "setting": setting, **result})
                print(
                    f"  {phase.kind} {setting}: {result['texts_per_s']} texts/s, client p50 "
                    f"{result['client_latency_ms']['p50']} ms",
                    flush=True,
                )
    return results


def _pooled(phases: Sequence[dict[str, Any]], side: str) -> dict[str, float | None]:
    return percentiles([value for phase in phases for value in phase["samples"][side]])


def summarise(phases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind, (a, b) in COMPARED.items():
        per_setting = {}
        for setting in (a, b):
            mine = [p for p in phases if p["kind"] == kind and p["setting"] == setting]
            texts = sum(p["texts"] for p in mine)
            seconds = sum(p["seconds"] for p in mine)
            windows = sum(p["windows"] for p in mine)
            per_setting[setting] = {
                "requests": sum(p["requests"] for p in mine),
                "texts_per_s": round(texts / seconds, 2) if seconds else None,
                "windows": windows,
                "failures": sum(p["failures"] for p in mine),
                "client_latency_ms": _pooled(mine, "client"),
                "server_latency_ms": _pooled(mine, "server"),
            }
        summary[kind] = {"settings": per_setting, "difference": _difference(per_setting, a, b)}
    return summary


def _difference(per_setting: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    """`a` minus `b` for each latency percentile (ms), and `a` over `b` for throughput."""
    out: dict[str, Any] = {}
    for side in ("client_latency_ms", "server_latency_ms"):
        mine, theirs = per_setting[a][side], per_setting[b][side]
        out[f"{side}_{a}_minus_{b}"] = {
            q: None if mine[q] is None or theirs[q] is None else round(mine[q] - theirs[q], 2)
            for q in mine
        }
    rates = per_setting[a]["texts_per_s"], per_setting[b]["texts_per_s"]
    out[f"throughput_{a}_over_{b}"] = round(rates[0] / rates[1], 3) if all(rates) else None
    return out


def format_report(result: dict[str, Any]) -> str:
    lines = [
        "| phase | kind | setting | requests | texts | s | texts/s | windows | requests/window "
        "| client p50 ms | client p95 ms | client p99 ms | server p50 ms | server p95 ms "
        "| failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(result["phases"]):
        c, s = p["client_latency_ms"], p["server_latency_ms"]
        lines.append(
            f"| {i} | {p['kind']} | {p['setting']} | {p['requests']} | {p['texts']} "
            f"| {p['seconds']} | {p['texts_per_s']} | {p['windows']} | {p['requests_per_window']} "
            f"| {c['p50']} | {c['p95']} | {c['p99']} | {s['p50']} | {s['p95']} | {p['failures']} |"
        )
    for kind, part in result["summary"].items():
        lines.append("")
        lines.append(f"{kind}:")
        for setting, t in part["settings"].items():
            c, s = t["client_latency_ms"], t["server_latency_ms"]
            lines.append(
                f"- {setting}: {t['texts_per_s']} texts/s, client p50/p95 {c['p50']}/{c['p95']} "
                f"ms, server p50/p95 {s['p50']}/{s['p95']} ms, {t['windows']} windows, "
                f"{t['failures']} failures"
            )
        for key, value in part["difference"].items():
            lines.append(f"- {key}: {value}")
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    phases: list[dict[str, Any]] = []
    for index, (setting, mine) in enumerate(SCHEDULE):
        phases += await _serve_phases(args, index, setting, mine)
    summary = summarise(phases)
    for phase in phases:
        del phase["samples"]  # pooled into the summary; the JSON keeps the percentiles
    return {"phases": phases, "summary": summary}


def run_window_bench(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    result = asyncio.run(_run(args))
    result = {
        "command": "capserve " + " ".join(sys.argv[1:]),
        "parameters": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run"
        },
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "settings": SETTINGS,
        **result,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    report = format_report(result)
    print(report)
    if args.output is not None:
        write_result(args.output, result, report)
    return 0
