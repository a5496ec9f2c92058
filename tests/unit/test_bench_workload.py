from __future__ import annotations

import pytest

from bench.long_texts import LONG_MAX_TOKENS, LONG_MIN_TOKENS, rough_tokens
from bench.sizes import phase_workload
from bench.workload import CAPABILITY_SETS, BenchRequest, make_workload, pack_capabilities
from capabilities.registry import CapabilityRegistry


def texts_of(workload: list[BenchRequest]) -> list[str]:
    return [text for request in workload for text in request.texts]


def repeated_share(texts: list[str]) -> float:
    """The share of text occurrences that repeat an earlier one."""
    return 1 - len(set(texts)) / len(texts)


def test_mixed_workload_is_seeded_and_phases_apart():
    first = make_workload(0, "a", 80)
    assert first == make_workload(0, "a", 80)
    assert first != make_workload(1, "a", 80)
    assert {r.capabilities for r in first} == set(CAPABILITY_SETS)
    assert not set(texts_of(first)) & set(texts_of(make_workload(0, "b", 80)))


def test_long_workload_is_seeded_distinct_and_100_to_500_tokens():
    first = make_workload(0, "a", 60, long=True, duplicate_rate=0.0)
    assert first == make_workload(0, "a", 60, long=True, duplicate_rate=0.0)
    texts = texts_of(first)
    assert len(set(texts)) == len(texts)  # every long text has its own context
    sizes = [rough_tokens(text) for text in texts]
    assert all(LONG_MIN_TOKENS <= size <= LONG_MAX_TOKENS for size in sizes)
    assert max(sizes) - min(sizes) > 150  # a spread of lengths, not one size
    # Several kinds of context, each followed by a request.
    openings = {text.split()[0] for text in texts}
    assert {"From:", "```python", "Incident", "Review"} <= openings
    assert not set(texts) & set(texts_of(make_workload(0, "b", 60, long=True)))


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.6])
def test_duplicate_rate_is_the_share_of_repeated_texts(rate):
    texts = texts_of(make_workload(0, "dup", 600, duplicate_rate=rate))
    # The first occurrence of each of the 8 shared texts is not a repeat.
    expected = rate - 8 / len(texts) if rate else 0.0
    assert repeated_share(texts) == pytest.approx(expected, abs=0.04)


def test_duplicate_rate_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="duplicate_rate"):
        make_workload(0, "a", 4, duplicate_rate=1.5)


def test_pack_is_every_llm_question_plus_dependencies(classic_registry: CapabilityRegistry):
    pack = pack_capabilities(classic_registry)
    llm = {s.name for s in classic_registry.specs() if s.kind.startswith("llm_")}
    assert llm == {"sentiment", "safety", "reasoning", "creativity", "complexity"}
    assert set(pack) == llm | {"task_type"}  # complexity reads task_type
    assert pack.index("task_type") < pack.index("complexity")


def test_pack_workload_asks_the_pack_of_every_text(classic_registry: CapabilityRegistry):
    class Args:
        seed, duplicate_rate, long, pack = 0, 0.25, True, True

    workload = phase_workload(Args(), classic_registry, "r0", 10)  # type: ignore[arg-type]
    assert {r.capabilities for r in workload} == {pack_capabilities(classic_registry)}
    assert all(rough_tokens(t) >= LONG_MIN_TOKENS for t in texts_of(workload))
