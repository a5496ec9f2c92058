"""`capserve bench-scoring`: times the llm_choice scoring methods side by side on one engine.

Each round sends the same number of fresh prompts with each method (order rotated per round),
so the methods share the engine's warm state and the machine's noise. It reports seconds,
texts/s and how often each method agrees with label_logprobs (the exact one).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from bench.run import write_result
from bench.workload import make_workload
from capabilities.registry import CapabilityRegistry
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import ProcessorInput, WindowContext
from processors.engines import apply_engine_env
from processors.pool import ProcessorPool
from server.settings import load_config

METHODS = ("label_logprobs", "top_logprobs", "choice")


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--capability", default="sentiment", help="an llm_choice capability")
    parser.add_argument("--texts", type=int, default=150, help="texts per method per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")


def _texts(seed: int, phase: str, count: int) -> list[str]:
    texts: list[str] = []
    for request in make_workload(seed, phase, count, duplicate_rate=0.0):
        texts.extend(request.texts)
    return texts[:count]


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(args.config)
    runners = {name: model.runner for name, model in config.models.items()}
    registry = CapabilityRegistry.from_directory(config.capabilities_dir, runners)
    base = registry.get(args.capability)
    if base.kind != "llm_choice" or base.model is None:
        raise SystemExit(f"capserve: '{args.capability}' is not an llm_choice capability")
    assert config.models_dir is not None
    apply_engine_env(config.engine_env)
    pool = ProcessorPool({base.model: config.models[base.model]}, config.models_dir)
    await pool.start()
    try:
        specs = {
            m: CapabilitySpec.from_definition(
                base.definition.model_copy(update={"scoring": m}), base.source
            )
            for m in METHODS
        }
        processor = pool.processor_for(base)

        async def run(method: str, texts: list[str]) -> tuple[float, list[str]]:
            inputs = [ProcessorInput(text, {}) for text in texts]
            started = time.perf_counter()
            results = await processor.run(specs[method], inputs, WindowContext())
            labels = [
                str(r.label) if isinstance(r, CapabilityResult) else "(failed)" for r in results
            ]
            return time.perf_counter() - started, labels

        for m in METHODS:  # warm-up: caches the instruction prefix, compiles the grammar
            await run(m, _texts(args.seed, f"warm-{m}", 16))
        rows: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]
            texts_by_method = {m: _texts(args.seed, f"r{r}-{m}", args.texts) for m in METHODS}
            for m in order:
                seconds, labels = await run(m, texts_by_method[m])
                # Agreement: the exact method's labels on the same texts, scored right after.
                _, exact = await run("label_logprobs", texts_by_method[m])
                agree = sum(a == b for a, b in zip(labels, exact, strict=True)) / len(labels)
                rows.append(
                    {
                        "round": r,
                        "method": m,
                        "texts": len(labels),
                        "seconds": round(seconds, 3),
                        "texts_per_s": round(len(labels) / seconds, 2),
                        "agreement_with_label_logprobs": round(agree, 3),
                    }
                )
                rate = rows[-1]["texts_per_s"]
                print(f"round {r}: {m} {rate} per second", flush=True)
    finally:
        pool.stop()
    totals = {
        m: round(
            sum(x["texts"] for x in rows if x["method"] == m)
            / sum(x["seconds"] for x in rows if x["method"] == m),
            2,
        )
        for m in METHODS
    }
    return {"capability": args.capability, "rows": rows, "texts_per_s": totals}


def run_scoring_bench(args: argparse.Namespace) -> int:
    result = asyncio.run(_measure(args))
    lines = [
        "| round | method | texts | s | texts/s | agreement with label_logprobs |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['round']} | {row['method']} | {row['texts']} | {row['seconds']} "
            f"| {row['texts_per_s']} | {row['agreement_with_label_logprobs']} |"
        )
    lines.append("")
    lines += [f"- {m}: {v} texts/s overall" for m, v in result["texts_per_s"].items()]
    report = "\n".join(lines)
    print(report)
    if args.output is not None:
        write_result(args.output, result, report)
    return 0
