"""`capserve bench`: batched and naive mode side by side, in one run, on the same engines.

It starts a server (or uses --url, which must allow the X-Capserve-Batching header), warms it
up, then runs alternating phases (batched, naive, naive, batched, ...) of the same kind of
workload with fresh texts per phase, and reports throughput, latency, capability executions
and engine work for each mode, and their ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx

from bench.workload import BenchRequest, make_workload
from server.observability.stats import LatencySamples

MODE_HEADER = "X-Capserve-Batching"
MODES = ("batched", "naive")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=None, help="use this running server instead of starting one"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=128, help="requests per phase")
    parser.add_argument("--rounds", type=int, default=3, help="phases per mode")
    parser.add_argument("--duplicate-rate", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--startup-timeout", type=float, default=900.0)


def write_result(output: Path, result: dict[str, Any], report: str) -> None:
    """The result as JSON at `output`, and as Markdown beside it, with the command that ran."""
    command = "capserve " + " ".join(sys.argv[1:])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".md").write_text(f"Command: `{command}`\n\n{report}\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(config: Path | None, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, CAPSERVE__BATCHING__ALLOW_MODE_HEADER="true")
    cmd = [sys.executable, "-m", "server.cli", "serve", "--port", str(port)]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


async def _wait_ready(client: httpx.AsyncClient, timeout: float, proc: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} while starting")
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(1.0)
    raise TimeoutError(f"the server was not ready after {timeout:.0f} s")


def _counters(stats: dict[str, Any]) -> dict[str, float]:
    work = stats["engines"]["work"].values()
    return {
        "windows": stats["windows"],
        "capability_executions": stats["capability_executions"],
        "naive_equivalent_executions": stats["naive_equivalent_executions"],
        "engine_prompts": sum(w["requests"] for w in work),
        "engine_prompt_tokens": sum(w["prompt_tokens"] for w in work),
        "engine_cached_prompt_tokens": sum(w["cached_prompt_tokens"] for w in work),
    }


async def _phase(
    client: httpx.AsyncClient, mode: str, workload: list[BenchRequest], clients: int
) -> dict[str, Any]:
    before = _counters((await client.get("/stats")).json())
    queue: asyncio.Queue[BenchRequest] = asyncio.Queue()
    for item in workload:
        queue.put_nowait(item)
    latencies = LatencySamples()
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while not queue.empty():
            item = queue.get_nowait()
            started = time.perf_counter()
            response = await client.post(
                "/classify",
                json={"texts": list(item.texts), "capabilities": list(item.capabilities)},
                headers={MODE_HEADER: mode},
            )
            latencies.add((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    seconds = time.perf_counter() - started
    after = _counters((await client.get("/stats")).json())
    texts = sum(len(item.texts) for item in workload)
    return {
        "mode": mode,
        "requests": len(workload),
        "texts": texts,
        "failures": failures,
        "seconds": round(seconds, 3),
        "texts_per_s": round(texts / seconds, 2),
        "latency_ms": latencies.percentiles(),
        **{key: after[key] - before[key] for key in after},
    }


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


async def _run(args: argparse.Namespace, base_url: str, proc: Any) -> dict[str, Any]:
    timeout = httpx.Timeout(600.0, connect=10.0)
    limits = httpx.Limits(max_connections=args.clients + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:
        await _wait_ready(client, args.startup_timeout, proc)
        for mode in MODES:  # warm-up: loads prompt prefixes and label embeddings
            await _phase(client, mode, make_workload(args.seed, f"warm-{mode}", 16), args.clients)
        phases = []
        for r in range(args.rounds):
            order = MODES if r % 2 == 0 else MODES[::-1]  # ABBA: neither mode always goes first
            for mode in order:
                workload = make_workload(
                    args.seed, f"r{r}-{mode}", args.requests, args.duplicate_rate
                )
                phases.append(await _phase(client, mode, workload, args.clients))
                print(
                    f"phase {len(phases)}: {mode} {phases[-1]['texts_per_s']} texts/s", flush=True
                )
        stats = (await client.get("/stats")).json()
    return {
        "command": "capserve " + " ".join(sys.argv[1:]),
        "parameters": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run"
        },
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        "batching": stats["batching"],
        "phases": phases,
        "summary": summarise(phases),
    }


def run_bench(args: argparse.Namespace) -> int:
    proc = None
    base_url = args.url
    log_path = Path(tempfile.gettempdir()) / f"capserve-bench-{os.getpid()}.log"
    with log_path.open("wb") as log:
        if base_url is None:
            port = _free_port()
            proc = _start_server(args.config, port, log)
            base_url = f"http://127.0.0.1:{port}"
            print(f"started a server on {base_url}; its log: {log_path}", flush=True)
    try:
        result = asyncio.run(_run(args, base_url, proc))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    report = format_report(result)
    print(report)
    if args.output is not None:
        write_result(args.output, result, report)
    return 0
