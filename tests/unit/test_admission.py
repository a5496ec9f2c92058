"""Bounded admission: capacity, release however a request ends, and headroom by priority."""

from __future__ import annotations

import pytest

from server.batching.admission import AdmissionController, AdmissionRejectedError
from server.batching.priority import Priority


def refusal(admission: AdmissionController, texts: int, priority: Priority = "normal") -> str:
    """The message of the refusal of `texts` more; fails the test if they are admitted."""
    with pytest.raises(AdmissionRejectedError) as refused, admission.admit(texts, priority):
        pass
    assert refused.value.retry_after_s == admission.retry_after_s
    return str(refused.value)


def test_requests_are_admitted_up_to_the_capacity_then_refused_with_retry_after():
    admission = AdmissionController(10, retry_after_s=3)
    with admission.admit(6), admission.admit(4):
        assert admission.state().admitted_texts == 10
        assert "10 of 10 texts" in refusal(admission, 1)
        assert "retry after 3 s" in refusal(admission, 1)
    state = admission.state()
    assert (state.admitted_texts, state.admitted_requests) == (0, 0)
    assert (state.accepted_total, state.rejected_total) == (2, 2)


def test_capacity_is_released_when_the_request_fails():
    admission = AdmissionController(5, retry_after_s=1)
    with pytest.raises(RuntimeError), admission.admit(5):
        raise RuntimeError("the request failed")
    with admission.admit(5):  # all of it is free again
        assert admission.state().admitted_texts == 5


def test_a_request_larger_than_the_capacity_is_admitted_alone():
    admission = AdmissionController(4, retry_after_s=1)
    with admission.admit(9):
        refusal(admission, 1, "high")
    with admission.admit(1):
        refusal(admission, 9)


def test_high_priority_keeps_headroom_that_low_and_normal_cannot_take():
    admission = AdmissionController(100, retry_after_s=1, shares={"normal": 0.9, "low": 0.5})
    limits = [admission.limit(p) for p in ("high", "normal", "low")]
    assert limits == [100, 90, 50]
    with admission.admit(50, "normal"):
        assert "50 of 50 texts" in refusal(admission, 1, "low")
        with admission.admit(40, "normal"):
            assert "90 of 90 texts" in refusal(admission, 1, "normal")
            with admission.admit(10, "high"):
                assert admission.state().admitted_texts == 100


def test_bad_capacity_is_refused():
    with pytest.raises(ValueError, match="max_texts must be >= 1"):
        AdmissionController(0, retry_after_s=1)
