from __future__ import annotations

from typing import Any

from bench.run import format_report, summarise
from bench.workload import CAPABILITY_SETS, make_workload


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
