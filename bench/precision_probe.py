"""Which precision is fastest on this machine: one embedding model's offline `LLM.embed` in each
dtype, on the same distinct texts, with capserve's engine arguments and core binding.

`python -m bench.precision_probe [--model minilm] [--texts 1000] [--rounds 2] --output FILE.json`
runs the raw-limit worker (bench.raw_limit_worker) once per dtype and round, in ABBA order, each
in its own process, and writes the timings with the CPU flags that `dtype: auto` reads and the
dtype it chose. It is the evidence behind `auto`'s rule on a new kind of CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.raw_limit import LimitJob, run_worker
from bench.workload import make_workload
from processors.precision import AUTO, BF16_CPU_FLAGS, choose_dtype, detect_hardware

DTYPES = ("float32", "bfloat16")


def distinct_texts(count: int, seed: int = 7) -> list[str]:
    """`count` distinct texts of the benchmark's mixed workload, in a fixed order."""
    texts: dict[str, None] = {}
    phase = 0
    while len(texts) < count:
        for request in make_workload(seed, f"precision-{phase}", count, duplicate_rate=0.0):
            texts.update(dict.fromkeys(request.texts))
        phase += 1
        if phase > 64:
            raise ValueError(f"the workload has fewer than {count} distinct texts")
    return list(texts)[:count]


def _time_once(model: str, dtype: str, jobs_file: Path, folder: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env[f"CAPSERVE__MODELS__{model.upper()}__DTYPE"] = dtype
    return run_worker(jobs_file, folder / f"{dtype}.result.json", env=env)[0]


def summarise(timings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Texts/s per dtype over its rounds, and each dtype's speed relative to float32."""
    per_dtype: dict[str, dict[str, float]] = {}
    for row in timings:
        entry = per_dtype.setdefault(row["dtype"], {"prompts": 0.0, "seconds": 0.0})
        entry["prompts"] += row["prompts"]
        entry["seconds"] += row["seconds"]
    speeds = {dtype: e["prompts"] / e["seconds"] for dtype, e in per_dtype.items() if e["seconds"]}
    base = speeds.get("float32")
    return {
        dtype: {
            "texts_per_s": round(speed, 1),
            "vs_float32": round(speed / base, 3) if base else None,
        }
        for dtype, speed in speeds.items()
    }


def render(report: Mapping[str, Any]) -> str:
    lines = [
        f"# Precision probe: {report['model']} `LLM.embed`, {report['texts']} distinct texts",
        "",
        f"CPU: {report['cpu']}. bfloat16 flags present: "
        f"{', '.join(report['bf16_flags']) or 'none'}. `dtype: auto` chose "
        f"**{report['auto_dtype']}** ({report['auto_reason']}).",
        "",
        "| round | dtype | texts | prompt tokens | s | texts/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["timings"]:
        speed = row["prompts"] / row["seconds"] if row["seconds"] else 0.0
        lines.append(
            f"| {row['round']} | {row['dtype']} | {row['prompts']} | {row['prompt_tokens']} "
            f"| {row['seconds']} | {speed:.1f} |"
        )
    lines += ["", "| dtype | texts/s | vs float32 |", "|---|---|---|"]
    for dtype, entry in report["summary"].items():
        lines.append(f"| {dtype} | {entry['texts_per_s']} | {entry['vs_float32']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.precision_probe", description=__doc__)
    parser.add_argument("--model", default="minilm", help="an embedding model of the config")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, required=True, help="FILE.json (and FILE.md)")
    args = parser.parse_args(argv)
    if args.texts < 1 or args.rounds < 1:
        parser.error("--texts and --rounds must be at least 1")
    hardware = detect_hardware()
    choice = choose_dtype(AUTO, hardware)
    job = LimitJob(args.model, "embed", texts=distinct_texts(args.texts))
    timings = []
    with tempfile.TemporaryDirectory(prefix="capserve-precision-") as name:
        folder = Path(name)
        jobs_file = folder / "jobs.json"
        jobs_file.write_text(json.dumps([asdict(job)]))
        for round_index in range(args.rounds):
            order = DTYPES if round_index % 2 == 0 else tuple(reversed(DTYPES))
            for dtype in order:
                row = _time_once(args.model, dtype, jobs_file, folder)
                timings.append({"round": round_index, "dtype": dtype, **row})
                print(f"round {round_index} {dtype}: {row['seconds']} s", flush=True)
    report = {
        "model": args.model,
        "texts": args.texts,
        "cpu": hardware.cpu_model or platform.processor() or "unknown",
        "bf16_flags": sorted(hardware.cpu_flags.intersection(BF16_CPU_FLAGS)),
        "auto_dtype": choice.dtype,
        "auto_reason": choice.reason,
        "timings": timings,
        "summary": summarise(timings),
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    markdown = render(report)
    args.output.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
