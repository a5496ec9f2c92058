"""`capserve bench-scaling`: capserve on Ray Serve as 1 replica x 2 cores against 2 replicas
x 1 core, side by side in one run.

Both applications run at once (two local Ray clusters, each `capserve serve --ray` with its own
port) so that the phases alternate A B B A on one machine in one sitting; the result cache is
off, so every text costs engine work and the comparison is the compute split alone (duplicates
within a window are still computed once). Each phase is the same mixed workload's shape with
fresh texts, driven by closed-loop clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench.phases import capserve_sender, drive
from bench.servers import HOST, ServerProcess, _spawn, free_port, running, sigterm_as_exit
from bench.workload import make_workload

REPLICA_HEADER = "x-capserve-replica"
STARTUP_TIMEOUT_S = 1200.0
# name -> (replicas, cores per replica)
LAYOUTS: dict[str, tuple[int, int]] = {"1x2": (1, 2), "2x1": (2, 1)}
ORDER = ("1x2", "2x1", "2x1", "1x2")


def add_scaling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=240, help="requests per phase")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON")


def _start(name: str, config: Path | None, replicas: int, cores: int, log: Path) -> ServerProcess:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "CAPSERVE__RAY__NUM_REPLICAS": str(replicas),
            "CAPSERVE__RAY__REPLICA_CPUS": str(cores),
            "CAPSERVE__RAY__LOCAL_CPUS": str(replicas * cores),
            "CAPSERVE__CACHE__ENABLED": "false",
            "CAPSERVE__SERVER__HOST": HOST,
        }
    )
    command = [sys.executable, "-m", "server.cli", "serve", "--ray", "--port", str(port)]
    if config is not None:
        command += ["--config", str(config)]
    return _spawn(name, command, env, log, f"http://{HOST}:{port}")


async def _wait_replicas(server: ServerProcess, count: int) -> None:
    """Until `count` distinct replicas have answered a request (each warm)."""
    seen: set[str] = set()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    n = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        while len(seen) < count:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited; its log: {server.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{server.name}: {len(seen)} of {count} replicas answered")
            n += 1
            body = {"texts": [f"warm-up {n} {time.time()}"], "capabilities": ["topic"]}
            try:
                response = await client.post("/classify", json=body)
            except httpx.TransportError:
                await asyncio.sleep(2)
                continue
            if response.status_code == 200:
                seen.add(response.headers[REPLICA_HEADER])
            else:
                await asyncio.sleep(1)


async def _phases(
    servers: Mapping[str, ServerProcess], args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    for position, name in enumerate(ORDER):
        workload = make_workload(args.seed, f"scaling-{position}", args.requests)
        async with httpx.AsyncClient(base_url=servers[name].url, timeout=600) as client:
            run = await drive(capserve_sender(client), workload, args.clients)
        row = {"layout": name, "position": position, **run.row()}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per layout: texts/s over both of its phases, the mean p50 and p95; and the ratio."""
    out: dict[str, Any] = {}
    for name in LAYOUTS:
        mine = [r for r in rows if r["layout"] == name]
        texts = sum(r["texts"] for r in mine)
        seconds = sum(r["seconds"] for r in mine)
        out[name] = {
            "texts_per_s": round(texts / seconds, 2) if seconds else None,
            "p50_ms": round(sum(r["latency_ms"]["p50"] or 0 for r in mine) / len(mine), 1),
            "p95_ms": round(sum(r["latency_ms"]["p95"] or 0 for r in mine) / len(mine), 1),
            "failures": sum(r["failures"] for r in mine),
        }
    one, two = out["1x2"]["texts_per_s"], out["2x1"]["texts_per_s"]
    out["ratio_2x1_over_1x2"] = round(two / one, 3) if one and two else None
    return out


def format_table(summary: Mapping[str, Any]) -> str:
    lines = [
        "| layout | texts/s | p50 ms | p95 ms | failures |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("1x2", "1 replica x 2 cores"), ("2x1", "2 replicas x 1 core")):
        s = summary[name]
        lines.append(
            f"| {label} | {s['texts_per_s']} | {s['p50_ms']} | {s['p95_ms']} | {s['failures']} |"
        )
    lines.append(f"\n2 x 1 over 1 x 2, throughput: {summary['ratio_2x1_over_1x2']}x")
    return "\n".join(lines)


def run_scaling_bench(args: argparse.Namespace) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="capserve-scaling-"))
    print(f"starting both layouts on Ray; logs in {log_dir}", flush=True)
    with sigterm_as_exit():
        servers = {
            name: _start(name, args.config, replicas, cores, log_dir / f"{name}.log")
            for name, (replicas, cores) in LAYOUTS.items()
        }
        with running(list(servers.values())):

            async def main() -> list[dict[str, Any]]:
                await asyncio.gather(*(_wait_replicas(servers[n], LAYOUTS[n][0]) for n in LAYOUTS))
                return await _phases(servers, args)

            rows = asyncio.run(main())
    summary = summarise(rows)
    result = {
        "command": "capserve bench-scaling " + " ".join(sys.argv[2:]),
        "requests_per_phase": args.requests,
        "clients": args.clients,
        "order": list(ORDER),
        "phases": rows,
        "summary": summary,
    }
    print(format_table(summary))
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0
