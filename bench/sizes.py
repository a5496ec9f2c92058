"""How big a benchmark run is: defaults per workload, `--quick`, and explicit options on top."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bench.workload import CAPABILITY_SETS, BenchRequest, make_workload, pack_capabilities
from capabilities.registry import CapabilityRegistry


@dataclass(frozen=True)
class Sizes:
    requests: int  # per phase
    clients: int  # closed-loop clients of a phase
    rounds: int  # phases per system (ABBA over rounds)
    warmup_requests: int  # per system, before the measured phases
    cache_replays: int  # answered requests replayed one at a time (cache-hit latency)


# Sized so that the three comparisons (mixed, --long, --pack --long) and the ablation run in
# about 25 minutes together on a 2-core CPU; the peer answers the pack at about 1/5 the rate.
_DEFAULTS = {
    "mixed": Sizes(requests=96, clients=32, rounds=2, warmup_requests=8, cache_replays=40),
    "long": Sizes(requests=32, clients=32, rounds=2, warmup_requests=8, cache_replays=40),
    "pack": Sizes(requests=16, clients=16, rounds=2, warmup_requests=4, cache_replays=20),
}
_QUICK = Sizes(requests=6, clients=4, rounds=1, warmup_requests=2, cache_replays=4)
# `capserve bench` with neither --against nor --ablation: batched vs naive, as before.
NAIVE_DEFAULTS = Sizes(requests=128, clients=32, rounds=3, warmup_requests=16, cache_replays=0)


def workload_name(args: argparse.Namespace) -> str:
    return "pack" if args.pack else "long" if args.long else "mixed"


def workload_label(args: argparse.Namespace) -> str:
    """The workload as reports name it (the pack's long-text variant says so)."""
    return workload_name(args) + (" (long texts)" if args.long and args.pack else "")


def resolve_sizes(args: argparse.Namespace, defaults: Sizes | None = None) -> Sizes:
    base = _QUICK if args.quick else defaults or _DEFAULTS[workload_name(args)]
    return Sizes(
        requests=args.requests or base.requests,
        clients=args.clients or base.clients,
        rounds=args.rounds or base.rounds,
        warmup_requests=base.warmup_requests,
        cache_replays=args.cache_replays if args.cache_replays is not None else base.cache_replays,
    )


def phase_workload(
    args: argparse.Namespace, registry: CapabilityRegistry, tag: str, requests: int
) -> list[BenchRequest]:
    """The run's workload for one phase tag (the same tag gives the same requests)."""
    sets = (pack_capabilities(registry),) if args.pack else CAPABILITY_SETS
    return make_workload(
        args.seed, tag, requests, args.duplicate_rate, long=args.long, capability_sets=sets
    )
