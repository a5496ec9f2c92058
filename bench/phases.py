"""One benchmark phase: closed-loop clients share a workload and send it to one system; and the
counters read before and after a phase (capserve's /stats, the vLLM servers' /metrics)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.agreement import Answer, Answers, answer_of_body
from bench.workload import BenchRequest
from server.observability.stats import LatencySamples

MODE_HEADER = "X-Capserve-Batching"

# Sends one request; returns each text's answers by capability, or raises on failure.
Send = Callable[[BenchRequest], Awaitable[list[dict[str, Answer]]]]


class SendError(Exception):
    """A request failed; the message is a short kind (an HTTP status, an exception type)."""


@dataclass
class PhaseRun:
    requests: int
    texts: int
    seconds: float
    latencies_ms: list[float]
    failures: int
    failure_kinds: dict[str, int] = field(default_factory=dict)
    answers: Answers = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The JSON-ready figures (answers and raw latencies left out)."""
        return {
            "requests": self.requests,
            "texts": self.texts,
            "failures": self.failures,
            "failure_kinds": self.failure_kinds,
            "seconds": round(self.seconds, 3),
            "texts_per_s": round(self.texts / self.seconds, 2) if self.seconds else None,
            "latency_ms": percentiles(self.latencies_ms),
        }


def percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    samples = LatencySamples(keep=max(1, len(values_ms)))
    samples.extend(values_ms)
    return samples.percentiles()


async def drive(send: Send, workload: Sequence[BenchRequest], clients: int) -> PhaseRun:
    """`clients` closed-loop clients take the workload's requests in order until none is left."""
    queue = list(reversed(workload))
    latencies: list[float] = []
    kinds: Counter[str] = Counter()
    answers: Answers = {}

    async def one_client() -> None:
        while queue:
            item = queue.pop()
            started = time.perf_counter()
            try:
                per_text = await send(item)
            except SendError as exc:
                kinds[str(exc)] += 1
                continue
            except Exception as exc:  # a broken peer call must not end the phase
                kinds[type(exc).__name__] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            for text, found in zip(item.texts, per_text, strict=True):
                answers.setdefault(text, {}).update(found)

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(max(1, clients))))
    seconds = time.perf_counter() - started
    return PhaseRun(
        requests=len(workload),
        texts=sum(len(item.texts) for item in workload),
        seconds=seconds,
        latencies_ms=latencies,
        failures=sum(kinds.values()),
        failure_kinds=dict(kinds),
        answers=answers,
    )


def capserve_sender(client: httpx.AsyncClient, mode: str | None = None) -> Send:
    """POST /classify to capserve (in `mode` through the X-Capserve-Batching header)."""
    headers = {MODE_HEADER: mode} if mode is not None else {}

    async def send(item: BenchRequest) -> list[dict[str, Answer]]:
        body = {"texts": list(item.texts), "capabilities": list(item.capabilities)}
        try:
            response = await client.post("/classify", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SendError(type(exc).__name__) from None
        if response.status_code != 200:
            raise SendError(f"HTTP {response.status_code}")
        rows = sorted(response.json()["results"], key=lambda row: int(row["index"]))
        return [
            {name: answer_of_body(result) for name, result in row["results"].items()}
            for row in rows
        ]

    return send


def capserve_counters(stats: Mapping[str, Any]) -> dict[str, float]:
    """The work counters of capserve's /stats that a phase's difference is taken of."""
    work = stats["engines"]["work"].values()
    prompt_tokens = sum(w["prompt_tokens"] for w in work)
    cached = sum(w["cached_prompt_tokens"] for w in work)
    return {
        "windows": stats["windows"],
        "capability_executions": stats["capability_executions"],
        "naive_equivalent_executions": stats["naive_equivalent_executions"],
        "engine_prompts": sum(w["requests"] for w in work),
        "engine_prompt_tokens": prompt_tokens,
        "engine_cached_prompt_tokens": cached,
        "computed_prompt_tokens": prompt_tokens - cached,
    }


async def read_capserve_counters(client: httpx.AsyncClient) -> dict[str, float]:
    return capserve_counters((await client.get("/stats")).json())


def prometheus_sum(text: str, name: str) -> float:
    """The sum of every sample of one metric (all label sets) in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        if metric == name:
            total += float(line.rsplit(" ", 1)[1])
    return total


def vllm_counters(metrics: Sequence[str]) -> dict[str, float]:
    """Engine work from `vllm serve` /metrics pages (one per server), summed."""
    prompt = sum(prometheus_sum(m, "vllm:prompt_tokens_total") for m in metrics)
    cached = sum(prometheus_sum(m, "vllm:prompt_tokens_cached_total") for m in metrics)
    return {
        "engine_prompts": sum(prometheus_sum(m, "vllm:request_success_total") for m in metrics),
        "engine_prompt_tokens": prompt,
        "engine_cached_prompt_tokens": cached,
        "computed_prompt_tokens": prompt - cached,
    }


async def read_vllm_counters(clients: Sequence[httpx.AsyncClient]) -> dict[str, float]:
    pages = [(await client.get("/metrics")).text for client in clients]
    return vllm_counters(pages)


def difference(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}
