from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.ablation import BINDING_STUDY
from bench.compare import abba, cores_used
from bench.naive import format_report, summarise
from bench.report import compare_systems, format_ablation, format_comparison, summarise_ablation
from bench.run import run_bench
from bench.servers import CpuSplit
from bench.sizes import resolve_sizes
from bench.workload import CAPABILITY_SETS, make_workload
from processors.engines import apply_engine_env
from server.cli import build_parser
from server.settings import load_config

REPO = Path(__file__).resolve().parents[2]


def phase(mode: str, texts: int, seconds: float, executions: int, prompts: int) -> dict[str, Any]:
    return {
        "mode": mode,
        "requests": 4,
        "texts": texts,
        "failures": 0,
        "seconds": seconds,
        "texts_per_s": round(texts / seconds, 2),
        "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0},
        "windows": 1,
        "capability_executions": executions,
        "naive_equivalent_executions": 12,
        "engine_prompts": prompts,
        "engine_prompt_tokens": prompts * 10,
        "engine_cached_prompt_tokens": prompts * 5,
    }


def test_workload_is_seeded_mixed_and_keeps_phases_apart():
    first = make_workload(0, "a", 50)
    assert first == make_workload(0, "a", 50)
    assert {r.capabilities for r in first} == set(CAPABILITY_SETS)
    texts = [t for r in first for t in r.texts]
    assert len(set(texts)) < len(texts)  # some texts repeat within a phase
    other = {t for r in make_workload(0, "b", 50) for t in r.texts}
    assert not other & set(texts)  # no phase reuses another phase's texts


def test_summary_ratios_compare_the_modes():
    phases = [
        phase("batched", 100, 2.0, 3, 80),
        phase("naive", 100, 4.0, 12, 100),
        phase("naive", 100, 4.0, 12, 100),
        phase("batched", 100, 2.0, 3, 80),
    ]
    summary = summarise(phases)
    assert summary["totals"]["batched"]["texts_per_s"] == 50.0
    assert summary["ratios"]["throughput_batched_over_naive"] == 2.0
    assert summary["ratios"]["capability_executions_naive_over_batched"] == 4.0
    assert summary["ratios"]["engine_prompts_naive_over_batched"] == 1.25
    report = format_report({"phases": phases, "summary": summary})
    assert "| batched | 0 | 100 | 2.0 | 50.0 |" in report
    assert "throughput_batched_over_naive: 2.0" in report


def system_phase(system: str, r: int, texts: int, seconds: float, tokens: int, samples):
    return {
        "round": r,
        "system": system,
        "requests": 4,
        "texts": texts,
        "failures": 0,
        "seconds": seconds,
        "texts_per_s": round(texts / seconds, 2),
        "latency_ms": {"p50": samples[0], "p95": samples[-1], "p99": samples[-1]},
        "engine_prompts": 10,
        "computed_prompt_tokens": tokens,
        "engine_prompt_tokens": 2 * tokens,
        "idle_system_cpu_s": 0.1,
        "cores_used": {"front_end": 0.5, "engines": 1.2, "client": 0.25, "idle_system": 0.05},
        "samples": samples,
    }


def test_abba_alternates_which_system_goes_first():
    assert abba(2) == [(0, "capserve"), (0, "vllm-serve"), (1, "vllm-serve"), (1, "capserve")]


def test_comparison_ratios_and_report_have_both_systems_and_agreement():
    phases = [
        system_phase("capserve", 0, 100, 2.0, 1000, [100.0, 200.0]),
        system_phase("vllm-serve", 0, 100, 5.0, 4000, [400.0, 800.0]),
        system_phase("vllm-serve", 1, 100, 5.0, 4000, [400.0, 800.0]),
        system_phase("capserve", 1, 100, 2.0, 1000, [100.0, 200.0]),
    ]
    summary = compare_systems(phases, "capserve", "vllm-serve")
    assert summary["totals"]["capserve"]["texts_per_s"] == 50.0
    assert summary["totals"]["vllm-serve"]["computed_prompt_tokens"] == 8000
    assert summary["ratios"]["texts_per_s_capserve_over_vllm-serve"] == 2.5
    assert summary["ratios"]["computed_prompt_tokens_capserve_over_vllm-serve"] == 0.25
    assert summary["ratios"]["p50_latency_capserve_over_vllm-serve"] == 0.25
    result = {
        "workload": "mixed",
        "duplicate_rate": 0.25,
        "sizes": {"requests": 4, "clients": 2},
        "phases": phases,
        "summary": summary,
        "agreement": {"sentiment": {"compared": 8, "agree": 6, "rate": 0.75}},
        "idle_cpu_cores": {"capserve": 0.02, "vllm-serve": 0.05},
        "cache_replay": {
            "requests": 4,
            "cached": 4,
            "server_latency_ms": {"p50": 0.2, "p95": 0.4},
        },
    }
    report = format_comparison(result)
    assert "| 0 | capserve | 4 | 100 | 2.0 | 50 |" in report
    assert "| vllm-serve | 20 |" in report
    assert "- texts_per_s_capserve_over_vllm-serve: 2.5" in report
    assert "| sentiment | 8 | 6 | 0.75 |" in report
    assert "4 answered from the cache; server latency_ms p50 0.2, p95 0.4" in report
    assert "while idle (before the measured phases): capserve 0.02, vllm-serve 0.05" in report
    assert "| 1 | vllm-serve | 0.5 | 1.2 | 0.25 | 0.05 | 2.0 |" in report


def test_cores_used_is_cpu_seconds_over_the_phase_seconds():
    used = cores_used(CpuSplit(front_end=3.0, engines=9.0), client_s=1.5, idle_s=0.3, seconds=6.0)
    assert used == {"front_end": 0.5, "engines": 1.5, "client": 0.25, "idle_system": 0.05}
    assert cores_used(CpuSplit(), 0.0, 0.0, 0.0) == {}
    assert CpuSplit(2.0, 5.0) - CpuSplit(0.5, 1.0) + CpuSplit(0.5, 0.0) == CpuSplit(2.0, 4.0)


def test_ablation_table_says_what_each_lever_is_worth():
    def lever(name: str, seconds: float, tokens: int):
        phase = system_phase(name, 0, 100, seconds, tokens, [50.0])
        return {**phase, "configuration": phase.pop("system")}

    # all_on runs twice (first and last): per-text figures keep it comparable.
    phases = [lever("all_on", 2.0, 1000), lever("dedup_off", 4.0, 1500), lever("all_on", 2.0, 1000)]
    summary = summarise_ablation(phases, ["all_on", "dedup_off"])
    assert summary["all_on"]["texts_per_s_vs_baseline"] == 1.0
    assert summary["dedup_off"]["texts_per_s_vs_baseline"] == 0.5
    assert summary["dedup_off"]["computed_prompt_tokens_vs_baseline"] == 1.5
    report = format_ablation(
        {
            "workload": "mixed",
            "sizes": {"requests": 4, "clients": 2},
            "schedule": ["all_on", "dedup_off", "all_on"],
            "descriptions": {"all_on": "nothing", "dedup_off": "dedup"},
            "summary": summary,
        }
    )
    assert "| dedup_off | dedup | 25 | 0.5 | 15 | 1.5 | 0.1 |" in report


def test_sizes_per_workload_quick_and_explicit():
    args = build_parser().parse_args(["bench", "--against", "vllm-serve"])
    mixed = resolve_sizes(args)
    args = build_parser().parse_args(["bench", "--against", "vllm-serve", "--pack", "--long"])
    pack = resolve_sizes(args)
    assert pack.requests < mixed.requests
    args = build_parser().parse_args(["bench", "--against", "vllm-serve", "--quick"])
    assert resolve_sizes(args).requests <= 8 and resolve_sizes(args).rounds == 1
    args = build_parser().parse_args(["bench", "--quick", "--requests", "3", "--rounds", "2"])
    assert (resolve_sizes(args).requests, resolve_sizes(args).rounds) == (3, 2)


def test_bad_options_get_a_clear_error(capsys):
    for argv in (
        ["bench", "--duplicate-rate", "1.5"],
        ["bench", "--requests", "0"],
        ["bench", "--against", "vllm-serve", "--url", "http://127.0.0.1:1"],
        ["bench", "--pack"],
        ["bench", "--core-binding"],
    ):
        assert run_bench(build_parser().parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert "--duplicate-rate must be between 0 and 1" in err
    assert "--core-binding needs --ablation" in err


ENGINE_ENV_KEYS = (
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_CPU_OMP_THREADS_BIND",
    "VLLM_WORKER_MULTIPROC_METHOD",
    "OMP_WAIT_POLICY",
)


def test_the_core_binding_study_runs_abc_cba_servers_whose_config_sets_the_binding(monkeypatch):
    study = BINDING_STUDY
    assert study.schedule[0] == study.schedule[-1] == "bind_all"
    assert study.schedule == tuple(reversed(study.schedule)) and not study.naive_on_first
    assert sorted(set(study.schedule)) == sorted(study.levers)
    seen = {}
    for name, overrides in study.levers.items():
        config = load_config(REPO / "configs/default.yaml", environ=overrides)
        for key in ENGINE_ENV_KEYS:  # set to be restored (unset) at the end, then cleared
            monkeypatch.setenv(key, "")
            monkeypatch.delenv(key)
        apply_engine_env(config.engine_env)
        seen[name] = (os.environ["VLLM_CPU_OMP_THREADS_BIND"], os.environ.get("OMP_WAIT_POLICY"))
    every_core = f"0-{(os.cpu_count() or 1) - 1}"
    assert seen == {
        "bind_all": (every_core, None),
        "bind_vllm_auto": ("auto", None),
        "bind_all_passive": (every_core, "PASSIVE"),
    }
    phases = [
        {**system_phase("x", 0, 100, seconds, 1000, [50.0]), "configuration": name}
        for name, seconds in (("bind_all", 2.0), ("bind_vllm_auto", 4.0))
    ]
    for phase in phases:
        phase.pop("system")
    summary = summarise_ablation(phases, list(study.levers), baseline="bind_all")
    assert summary["bind_vllm_auto"]["texts_per_s_vs_baseline"] == 0.5
    report = format_ablation(
        {
            "workload": "mixed",
            "sizes": {"requests": 4, "clients": 2},
            "schedule": list(study.schedule),
            "descriptions": study.descriptions,
            "summary": summary,
        }
    )
    assert "| configuration | what differs | texts/s | vs bind_all |" in report
    assert "| bind_vllm_auto | vLLM's own binding" in report
