"""Where each replica of a model's engine runs: its CPU cores or its GPUs (pure; no vLLM).

A model has `replicas` data-parallel copies of its engine, each split across
`tensor_parallel_size` ranks. Every replica's engine process starts with its own environment:
- vLLM's CPU build: VLLM_CPU_OMP_THREADS_BIND, the cores its OpenMP threads bind to. With
  tensor_parallel_size > 1, vLLM wants one core set per rank, joined by "|" ("0-1|2-3"), so a
  replica's set is split evenly into that many rank sets. A single replica of one rank with no
  `cpu_cores` gets no entry: the global `engine_env.cpu_omp_threads_bind` applies, as before.
- a GPU build: CUDA_VISIBLE_DEVICES, the GPUs of its ranks (indices as nvidia-smi lists them).

Impossible placements (more GPUs than exist, overlapping core sets of one model's replicas,
cores this process may not run on...) raise PlacementError naming the model. Different models
may share cores and GPUs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from processors.precision import detect_hardware
from schemas.config import ModelConfig

TARGETS = ("cpu", "gpu")
CPU_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
GPU_ENV = "CUDA_VISIBLE_DEVICES"

_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class ReplicaPlacement:
    """One replica of one model: the environment its engine process must start with."""

    # The model's name in the config.
    model: str
    # Replica number, 0..replicas-1.
    index: int
    # CPU: {"VLLM_CPU_OMP_THREADS_BIND": "<set>"} (empty for a single replica of one rank with
    # no cpu_cores: the global binding applies); GPU: {"CUDA_VISIBLE_DEVICES": "0,1"}.
    env: dict[str, str]
    tensor_parallel_size: int

    @property
    def label(self) -> str:
        """The replica's `replica` label in /stats and /metrics."""
        return str(self.index)


class PlacementError(ValueError):
    """A placement that cannot work; the message names the model and what is impossible."""


def parse_core_set(spec: str) -> frozenset[int]:
    """A core set in VLLM_CPU_OMP_THREADS_BIND syntax: "0-3,6" -> {0, 1, 2, 3, 6}."""
    cores: set[int] = set()
    for item in spec.split(","):
        match = _ITEM.match(item.strip())
        if match is None:
            raise PlacementError(
                f"core set {spec!r}: {item.strip()!r} is neither a core number nor a range a-b"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise PlacementError(f"core set {spec!r}: range {item.strip()!r} runs backwards")
        cores.update(range(first, last + 1))
    return frozenset(cores)


def format_core_set(cores: Iterable[int]) -> str:
    """The shortest spelling of a core set: {0, 1, 2, 3, 6} -> "0-3,6"."""
    parts: list[str] = []
    ordered = sorted(set(cores))
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[start], ordered[end]
        parts.append(str(first) if first == last else f"{first}-{last}")
        start = end + 1
    return ",".join(parts)


def _split(items: Sequence[int], parts: int) -> list[list[int]]:
    """`items` in `parts` contiguous runs whose sizes differ by at most one (larger first)."""
    size, extra = divmod(len(items), parts)
    runs: list[list[int]] = []
    start = 0
    for part in range(parts):
        end = start + size + (1 if part < extra else 0)
        runs.append(list(items[start:end]))
        start = end
    return runs


def _counted(replicas: int, tp: int) -> str:
    return f"{replicas} replica{'s' if replicas != 1 else ''} x tensor_parallel_size {tp}"


def _replica_ranks(name: str, index: int, spec: str, tp: int) -> list[frozenset[int]]:
    """The rank core sets of replica `index` from its cpu_cores entry."""
    where = f"model '{name}': cpu_cores[{index}] {spec!r}"
    try:
        if "|" in spec:
            ranks = [parse_core_set(part) for part in spec.split("|")]
        else:
            ranks = [parse_core_set(spec)]
    except PlacementError as exc:
        raise PlacementError(f"{where}: {exc}") from None
    if len(ranks) > 1:
        if len(ranks) != tp:
            raise PlacementError(
                f"{where} gives {len(ranks)} rank sets; tensor_parallel_size is {tp}"
            )
        for a in range(tp):
            for b in range(a + 1, tp):
                shared = ranks[a] & ranks[b]
                if shared:
                    raise PlacementError(
                        f"{where}: ranks {a} and {b} share cores {_braced(shared)}"
                    )
        return ranks
    cores = sorted(ranks[0])
    if len(cores) < tp:
        raise PlacementError(
            f"{where} holds {len(cores)} core{'s' if len(cores) != 1 else ''}; "
            f"tensor_parallel_size {tp} needs at least {tp}"
        )
    return [frozenset(run) for run in _split(cores, tp)]


def _braced(cores: Iterable[int]) -> str:
    return "{" + ", ".join(str(c) for c in sorted(cores)) + "}"


def _bind(ranks: Sequence[frozenset[int]]) -> dict[str, str]:
    return {CPU_BIND_ENV: "|".join(format_core_set(rank) for rank in ranks)}


def _place_cpu(name: str, model: ModelConfig, cpu_cores: Sequence[int]) -> list[dict[str, str]]:
    replicas, tp = model.replicas, model.tensor_parallel_size
    if model.devices is not None:
        raise PlacementError(f"model '{name}': devices is for GPUs; on the CPU build use cpu_cores")
    machine = sorted(set(cpu_cores))
    if model.cpu_cores is None:
        if replicas == 1 and tp == 1:
            return [{}]
        if len(machine) < replicas * tp:
            raise PlacementError(
                f"model '{name}' needs at least {replicas * tp} cores ({_counted(replicas, tp)}); "
                f"this machine has {len(machine)}"
            )
        return [
            _bind([frozenset(run) for run in _split(share, tp)])
            for share in _split(machine, replicas)
        ]
    if len(model.cpu_cores) != replicas:
        raise PlacementError(
            f"model '{name}': cpu_cores lists {len(model.cpu_cores)} core sets; "
            f"it needs one per replica ({replicas})"
        )
    available = frozenset(machine)
    placed: list[frozenset[int]] = []
    envs = []
    for index, spec in enumerate(model.cpu_cores):
        ranks = _replica_ranks(name, index, spec, tp)
        cores = frozenset().union(*ranks)
        missing = cores - available
        if missing:
            raise PlacementError(
                f"model '{name}': replica {index} binds cores {_braced(missing)}, which this "
                f"machine does not have (available: {format_core_set(machine) or 'none'})"
            )
        for other, earlier in enumerate(placed):
            shared = earlier & cores
            if shared:
                raise PlacementError(
                    f"replicas {other} and {index} of model '{name}' share cores {_braced(shared)}"
                )
        placed.append(cores)
        envs.append(_bind(ranks))
    return envs


def _place_gpu(name: str, model: ModelConfig, gpu_count: int) -> list[dict[str, str]]:
    replicas, tp = model.replicas, model.tensor_parallel_size
    needed = replicas * tp
    if model.cpu_cores is not None:
        raise PlacementError(
            f"model '{name}': cpu_cores is for the CPU build; on a GPU use devices"
        )
    if gpu_count <= 0:
        raise PlacementError(f"model '{name}': the target is gpu but this machine has no GPU")
    if model.devices is None:
        if needed > gpu_count:
            raise PlacementError(
                f"model '{name}' needs {needed} GPUs ({_counted(replicas, tp)}); "
                f"this machine has {gpu_count}"
            )
        devices = list(range(needed))
    else:
        devices = list(model.devices)
        if len(devices) != needed:
            raise PlacementError(
                f"model '{name}': devices lists {len(devices)} GPUs; "
                f"{_counted(replicas, tp)} need exactly {needed}"
            )
        repeated = sorted({d for d in devices if devices.count(d) > 1})
        if repeated:
            raise PlacementError(
                f"model '{name}': devices lists GPU {', '.join(map(str, repeated))} more than once"
            )
        absent = [d for d in devices if not 0 <= d < gpu_count]
        if absent:
            raise PlacementError(
                f"model '{name}': devices names GPU {', '.join(map(str, absent))}; this machine "
                f"has {gpu_count} (0-{gpu_count - 1})"
            )
    return [
        {GPU_ENV: ",".join(str(d) for d in devices[r * tp : (r + 1) * tp])} for r in range(replicas)
    ]


def place_model(
    name: str, model: ModelConfig, target: str, cpu_cores: Sequence[int], gpu_count: int
) -> list[ReplicaPlacement]:
    """Every replica of one model: `cpu_cores` are the cores this process may run on (read on
    the CPU build), `gpu_count` the GPUs of this machine (read on a GPU build)."""
    if target == "cpu":
        envs = _place_cpu(name, model, cpu_cores)
    elif target == "gpu":
        envs = _place_gpu(name, model, gpu_count)
    else:
        raise PlacementError(f"model '{name}': unknown target {target!r} (cpu or gpu)")
    return [
        ReplicaPlacement(name, index, env, model.tensor_parallel_size)
        for index, env in enumerate(envs)
    ]


def place_models(
    models: Mapping[str, ModelConfig],
    target: str,
    cpu_cores: Sequence[int] | None = None,
    gpu_count: int | None = None,
) -> dict[str, list[ReplicaPlacement]]:
    """Every model's replicas; the cores and GPUs default to this machine's (read only for the
    target that uses them)."""
    if target == "cpu" and cpu_cores is None:
        cpu_cores = available_cpu_cores()
    if target == "gpu" and gpu_count is None:
        gpu_count = len(detect_hardware().gpu_capabilities)
    return {
        name: place_model(name, model, target, cpu_cores or (), gpu_count or 0)
        for name, model in models.items()
    }


def available_cpu_cores() -> list[int]:
    """The cores this process may run on (its affinity mask), in order."""
    return sorted(os.sched_getaffinity(0))
