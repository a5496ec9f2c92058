"""`capserve bench`: the benchmark command.

- `--against vllm-serve`: capserve against the pipeline a platform team would build on
  `vllm serve` (bench.compare);
- `--ablation`: capserve with each lever off in turn (bench.ablation); with `--core-binding`,
  with each core binding of the engines instead;
- `--limit` (with `--against`): each capserve round's engine work on vLLM's offline engines, and
  capserve's throughput as a fraction of that raw limit (bench.raw_limit);
- neither: batched against naive mode on one server (bench.naive).

`--against` and `--ablation` together run both, one after the other, into one result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bench.servers import sigterm_as_exit


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--against",
        choices=["vllm-serve"],
        default=None,
        help="compare with a pipeline of calls to `vllm serve` on the same models",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="capserve with each lever off in turn"
    )
    parser.add_argument(
        "--limit",
        action="store_true",
        help="with --against: also each capserve round's engine work on vLLM's offline engines "
        "(the raw limit), and capserve's throughput as a fraction of it",
    )
    parser.add_argument(
        "--core-binding",
        action="store_true",
        help="with --ablation: compare the engines' core bindings instead of the levers",
    )
    parser.add_argument("--long", action="store_true", help="long prompts (100-500 tokens)")
    parser.add_argument(
        "--pack", action="store_true", help="every LLM question of the pack on every text"
    )
    parser.add_argument(
        "--duplicate-rate", type=float, default=0.25, help="share of texts repeated in a phase"
    )
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=None, help="requests per phase")
    parser.add_argument("--rounds", type=int, default=None, help="phases per system")
    parser.add_argument(
        "--cache-replays",
        type=int,
        default=None,
        help="answered requests replayed one at a time to measure cache hits (--against)",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--url", default=None, help="batched vs naive only: use this running server"
    )
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--startup-timeout", type=float, default=900.0)


def write_result(output: Path, result: dict[str, Any], report: str) -> None:
    """The result as JSON at `output`, and as Markdown beside it, with the command that ran."""
    command = "capserve " + " ".join(sys.argv[1:])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".md").write_text(f"Command: `{command}`\n\n{report}\n")


def _check(args: argparse.Namespace) -> str | None:
    if not 0.0 <= args.duplicate_rate <= 1.0:
        return "--duplicate-rate must be between 0 and 1"
    for name in ("clients", "requests", "rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name} must be at least 1"
    if args.cache_replays is not None and args.cache_replays < 0:
        return "--cache-replays must be 0 or more"
    if args.limit and not args.against:
        return "--limit needs --against (it measures the rounds of the comparison)"
    if args.core_binding and not args.ablation:
        return "--core-binding needs --ablation (it runs the ablation's servers per binding)"
    if args.pack and not (args.against or args.ablation):
        return "--pack needs --against or --ablation"
    if args.url is not None and (args.against or args.ablation):
        return "--url works only for batched vs naive (it starts its own servers otherwise)"
    return None


async def _run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    from bench import report

    if not (args.against or args.ablation):
        from bench.naive import format_report, run_naive_comparison

        naive = await run_naive_comparison(args)
        return naive, format_report(naive)
    result: dict[str, Any] = {}
    parts = []
    if args.against:
        from bench.compare import run_comparison

        result["comparison"] = await run_comparison(args)
        parts.append(report.format_comparison(result["comparison"]))
    if args.ablation:
        from bench.ablation import run_ablation

        result["ablation"] = await run_ablation(args)
        parts.append(report.format_ablation(result["ablation"]))
    return result, "\n\n".join(parts)


def run_bench(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem is not None:
        print(f"capserve bench: {problem}", file=sys.stderr)
        return 2
    with sigterm_as_exit():
        result, table = asyncio.run(_run(args))
    result = {
        "command": "capserve " + " ".join(sys.argv[1:]),
        "parameters": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run"
        },
        **result,
    }
    print(table)
    if args.output is not None:
        write_result(args.output, result, table)
    return 0
