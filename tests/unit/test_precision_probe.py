"""The precision probe's workload and report (bench.precision_probe); the engines run in its
own command, not here."""

from __future__ import annotations

from bench.precision_probe import distinct_texts, render, summarise


def test_the_probe_texts_are_distinct_and_fixed():
    texts = distinct_texts(300)
    assert len(texts) == 300
    assert len(set(texts)) == 300
    assert distinct_texts(300) == texts


def test_each_dtype_is_summarised_over_its_rounds_against_float32():
    timings = [
        {"round": 0, "dtype": "float32", "prompts": 100, "prompt_tokens": 2000, "seconds": 0.5},
        {"round": 0, "dtype": "bfloat16", "prompts": 100, "prompt_tokens": 2000, "seconds": 1.0},
        {"round": 1, "dtype": "bfloat16", "prompts": 100, "prompt_tokens": 2000, "seconds": 1.0},
        {"round": 1, "dtype": "float32", "prompts": 100, "prompt_tokens": 2000, "seconds": 0.5},
    ]
    summary = summarise(timings)
    assert summary == {
        "float32": {"texts_per_s": 200.0, "vs_float32": 1.0},
        "bfloat16": {"texts_per_s": 100.0, "vs_float32": 0.5},
    }
    report = {
        "model": "minilm",
        "texts": 100,
        "cpu": "Some CPU",
        "bf16_flags": [],
        "auto_dtype": "float32",
        "auto_reason": "auto: CPU has neither amx_bf16 nor avx512_bf16",
        "timings": timings,
        "summary": summary,
    }
    markdown = render(report)
    assert "bfloat16 flags present: none" in markdown
    assert "| bfloat16 | 100.0 | 0.5 |" in markdown
    assert "| 1 | float32 | 100 | 2000 | 0.5 | 200.0 |" in markdown
