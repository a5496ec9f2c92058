"""dtype: auto resolves from the hardware; an explicit dtype wins; the dtype is in the version."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.engines import engine_args
from processors.precision import (
    Hardware,
    canonical_dtype,
    choose_dtype,
    parse_compute_capabilities,
    parse_cpu_flags,
    parse_cpu_model,
)
from server.registry_loading import load_registry
from server.settings import load_config

REPO = Path(__file__).resolve().parents[2]
AMX = Hardware("cpu", frozenset({"avx512f", "amx_bf16", "amx_int8", "avx512_bf16"}))
AVX512_BF16_ONLY = Hardware("cpu", frozenset({"avx512f", "avx512_bf16"}))
PLAIN_AVX2 = Hardware("cpu", frozenset({"avx2", "fma"}))
AMPERE = Hardware("gpu", frozenset(), ((8, 6), (8, 0)))
MIXED_GPUS = Hardware("gpu", frozenset(), ((8, 6), (7, 5)))


@pytest.mark.parametrize(
    ("hardware", "dtype"),
    [
        (AMX, "bfloat16"),
        (AVX512_BF16_ONLY, "bfloat16"),
        (PLAIN_AVX2, "float32"),
        (AMPERE, "bfloat16"),
        (MIXED_GPUS, "float16"),  # the oldest GPU decides: a T4 has no bfloat16
        (Hardware("gpu"), "float16"),
    ],
)
def test_auto_picks_the_fastest_precision_the_hardware_has(hardware, dtype):
    choice = choose_dtype("auto", hardware)
    assert choice.dtype == dtype and choice.reason.startswith("auto:")


def test_an_explicit_dtype_wins_and_is_named_canonically():
    assert choose_dtype("float32", AMX).dtype == "float32"
    assert choose_dtype("half", PLAIN_AVX2).dtype == "float16"
    assert choose_dtype("bfloat16", PLAIN_AVX2).reason == "configured"
    assert canonical_dtype("torch.bfloat16") == "bfloat16" and canonical_dtype("float") == "float32"


def test_the_hardware_readers_parse_cpuinfo_and_nvidia_smi():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16\nbugs\t: x\n"
    assert parse_cpu_flags(cpuinfo) == frozenset({"fpu", "avx512f", "amx_bf16"})
    assert parse_cpu_flags("no flags here") == frozenset()
    assert parse_cpu_model("model name\t: AMD EPYC 9B45\nflags\t: fpu\n") == "AMD EPYC 9B45"
    assert parse_cpu_model(cpuinfo) == ""
    assert parse_compute_capabilities(["8.6", " 9.0 ", "", "N/A"]) == ((8, 6), (9, 0))


def test_the_config_resolves_auto_and_keeps_an_explicit_dtype():
    env = {"CAPSERVE__MODELS__SMOLLM2__DTYPE": "float32"}
    config = load_config(REPO / "configs/default.yaml", environ=env, hardware=AMX)
    assert config.models["minilm"].dtype == "bfloat16"  # the shipped auto
    assert config.models["smollm2"].dtype == "float32"
    plain = load_config(REPO / "configs/default.yaml", environ={}, hardware=PLAIN_AVX2)
    assert {m.dtype for m in plain.models.values()} == {"float32"}
    # The engine gets the resolved dtype, never vLLM's own auto (the model file's float32).
    assert engine_args(config.models["minilm"], "/m").dtype == "bfloat16"


def test_the_dtype_is_part_of_every_model_capabilitys_version():
    bf16 = load_registry(load_config(REPO / "configs/default.yaml", environ={}, hardware=AMX))
    fp32 = load_registry(
        load_config(REPO / "configs/default.yaml", environ={}, hardware=PLAIN_AVX2)
    )
    changed = {s.name for s in bf16.specs() if s.version != fp32.get(s.name).version}
    with_model = {s.name for s in bf16.specs() if s.model is not None}
    assert with_model and with_model <= changed
    # Rules over model capabilities change too: their inputs did.
    assert "alerts" in changed and "route" in changed
