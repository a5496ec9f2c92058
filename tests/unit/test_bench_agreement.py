from __future__ import annotations

from bench.agreement import (
    Answers,
    agreement,
    agrees,
    answer_of_body,
    answer_of_result,
    merge_agreement,
)
from bench.phases import capserve_counters, prometheus_sum, vllm_counters
from capabilities.results import CapabilityResult


def test_answers_from_capserve_bodies_and_results_match_by_kind():
    assert answer_of_body({"label": "positive", "score": None, "labels": None}) == "positive"
    assert answer_of_body({"label": None, "score": 0.25, "labels": None}) == 0.25
    multilabel = {"label": "toxicity", "score": None, "labels": ["toxicity", "prompt_injection"]}
    assert answer_of_body(multilabel) == frozenset({"toxicity", "prompt_injection"})
    assert answer_of_body({"label": None, "score": None, "labels": []}) == frozenset()
    result = CapabilityResult("safety", "v", None, 0.9, {}, labels=("prompt_injection",))
    assert answer_of_result(result) == frozenset({"prompt_injection"})
    assert answer_of_result(CapabilityResult("reasoning", "v", None, 0.9, {}, score=0.3)) == 0.3


def test_scores_agree_within_a_tenth_and_labels_only_when_equal():
    assert agrees(0.30, 0.40)
    assert agrees(0.40, 0.30)
    assert not agrees(0.30, 0.41)
    assert agrees("positive", "positive")
    assert not agrees("positive", "neutral")
    assert agrees(frozenset({"a", "b"}), frozenset({"b", "a"}))
    assert not agrees(frozenset({"a"}), frozenset())
    assert agrees(None, None)


def test_agreement_per_capability_over_shared_texts_only():
    ours: Answers = {
        "t1": {"sentiment": "positive", "reasoning": 0.2, "safety": frozenset()},
        "t2": {"sentiment": "negative", "reasoning": 0.9},
        "only ours": {"sentiment": "neutral"},
    }
    theirs: Answers = {
        "t1": {"sentiment": "positive", "reasoning": 0.25, "safety": frozenset({"toxicity"})},
        "t2": {"sentiment": "neutral", "reasoning": 0.5},
    }
    table = agreement(ours, theirs)
    assert table == {
        "reasoning": {"compared": 2, "agree": 1, "rate": 0.5},
        "safety": {"compared": 1, "agree": 0, "rate": 0.0},
        "sentiment": {"compared": 2, "agree": 1, "rate": 0.5},
    }
    merged = merge_agreement([table, agreement(theirs, theirs)])
    assert merged["sentiment"] == {"compared": 4, "agree": 3, "rate": 0.75}
    assert all(0.0 <= row["rate"] <= 1.0 for row in merged.values())


METRICS = """# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="smollm2"} 1579.0
vllm:prompt_tokens_created{engine="0",model_name="smollm2"} 1.7e+09
vllm:prompt_tokens_cached_total{engine="0",model_name="smollm2"} 832.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="smollm2"} 9.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="smollm2"} 2.0
"""


def test_vllm_metrics_are_summed_over_label_sets_and_servers():
    assert prometheus_sum(METRICS, "vllm:request_success_total") == 11.0
    assert prometheus_sum(METRICS, "vllm:prompt_tokens") == 0.0  # only exact names count
    counters = vllm_counters([METRICS, METRICS])
    assert counters == {
        "engine_prompts": 22.0,
        "engine_prompt_tokens": 3158.0,
        "engine_cached_prompt_tokens": 1664.0,
        "computed_prompt_tokens": 1494.0,
    }


def test_capserve_counters_compute_uncached_tokens():
    stats = {
        "windows": 3,
        "capability_executions": 9,
        "naive_equivalent_executions": 20,
        "engines": {
            "work": {
                "smollm2": {"requests": 10, "prompt_tokens": 1000, "cached_prompt_tokens": 700},
                "minilm": {"requests": 4, "prompt_tokens": 80, "cached_prompt_tokens": 0},
            }
        },
    }
    counters = capserve_counters(stats)
    assert counters["engine_prompts"] == 14
    assert counters["computed_prompt_tokens"] == 380
