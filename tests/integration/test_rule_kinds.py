"""The model-free kinds (regex, formula), rule case details and conditions (`when:`) through
HTTP on the live server, with the test-only capabilities of capabilities/t_rules.yaml.

Every text carries a fresh run tag, so that the result cache cannot answer and each request is
computed: the tag is one lowercase word, which no built-in pattern matches.
"""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import uuid4

import httpx

PII_LABELS = ["email", "phone", "credit_card", "iban", "order_id"]
CONDITIONED = ["t_when_rule", "t_when_embed", "t_after_skip"]


def tagged(text: str) -> str:
    return f"run{uuid4().hex} {text}"


def classify(
    client: httpx.Client, texts: list[str], caps: list[str], with_deps: bool = False
) -> list[dict[str, Any]]:
    body = {"texts": texts, "capabilities": caps, "include_dependencies": with_deps}
    response = client.post("/classify", json=body)
    assert response.status_code == 200, response.text
    return [item["results"] for item in response.json()["results"]]


def matched(text: str, result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, matched text) of every match, in the order the result lists them."""
    return [(m["label"], text[m["start"] : m["end"]]) for m in result["fields"]["matches"]]


def settled_stats(client: httpx.Client) -> dict[str, Any]:
    """/stats once the engines' work stands still (no warm-up still running in the background)."""
    previous: dict[str, Any] = client.get("/stats").json()
    for _ in range(20):
        time.sleep(0.5)
        current: dict[str, Any] = client.get("/stats").json()
        if current["engines"]["work"] == previous["engines"]["work"]:
            return current
        previous = current
    return previous


def test_pii_spans_of_an_email_and_a_luhn_valid_card(client: httpx.Client):
    text = tagged("Mail jane.roe@example.org, card 4111 1111 1111 1111, typo 4111 1111 1111 1112.")
    (results,) = classify(client, [text], ["t_pii"])
    pii = results["t_pii"]
    assert pii["labels"] == ["email", "credit_card"] and pii["label"] == "email"
    assert pii["confidence"] == 1.0
    assert pii["probabilities"] == {name: float(name in pii["labels"]) for name in PII_LABELS}
    assert matched(text, pii) == [
        ("email", "jane.roe@example.org"),
        ("credit_card", "4111 1111 1111 1111"),
    ]
    assert pii["fields"]["count"] == 2
    # The Luhn-invalid number is no card, and too long for a phone: nothing covers it.
    typo = text.index("4111 1111 1111 1112")
    assert all(m["end"] <= typo for m in pii["fields"]["matches"])
    # Offsets only: the matched text (PII) is nowhere in the response.
    assert "jane.roe" not in json.dumps(pii) and "4111" not in json.dumps(pii)
    assert pii["skipped"] is False and pii["reason"] is None and pii["error"] is None


def test_iban_custom_pattern_and_phone_outside_them(client: httpx.Client):
    text = tagged(
        "Pay GB82 WEST 1234 5698 7654 32 for ORD-123456, not GB83 WEST 1234 5698 7654 32; "
        "questions: +44 20 7946 0958."
    )
    (results,) = classify(client, [text], ["t_pii"])
    pii = results["t_pii"]
    assert pii["labels"] == ["phone", "iban", "order_id"]
    assert matched(text, pii) == [
        ("iban", "GB82 WEST 1234 5698 7654 32"),
        ("order_id", "ORD-123456"),
        ("phone", "+44 20 7946 0958"),
    ]


def test_formula_of_few_shot_markers_and_pii(client: httpx.Client):
    text = tagged(
        "Classify the sentiment.\n"
        "Example: great food -> positive\n"
        "Input: awful service\n"
        "Q: was it fine?\n"
        "Contact a@b.io or +1 555 123 4567."
    )
    (results,) = classify(client, [text], ["t_weighted"], with_deps=True)
    assert results["t_fewshots"]["fields"]["count"] == 3
    assert results["t_pii"]["fields"]["count"] == 2
    weighted = results["t_weighted"]
    assert weighted["score"] == 0.25 * 3 + 0.5 * 2  # no clip: above 1
    assert weighted["label"] is None and weighted["confidence"] == 1.0
    assert weighted["fields"] == {"t_fewshots": 3.0, "t_pii": 2.0, "t_weight": 1.75}
    assert weighted["details"] == {"terms": {"t_fewshots.count": 0.25, "t_pii.count": 0.5}}


def test_rule_expression_cases_and_their_details(client: httpx.Client):
    texts = [
        tagged("Refund to NL91ABNA0417164300 please."),
        tagged("Reach me at sam@example.net."),
        tagged("Where is ORD-654321?"),
    ]
    rows = classify(client, texts, ["t_when_rule"])
    decided = [(r["t_when_rule"]["label"], r["t_when_rule"]["details"]["tier"]) for r in rows]
    assert decided == [("restricted", "vault"), ("contact", "crm"), ("other", "review")]
    assert [r["t_when_rule"]["details"]["matched"] for r in rows] == ["case 0", "case 1", "default"]


def test_texts_where_the_condition_fails_are_skipped_and_never_reach_the_engine(
    client: httpx.Client,
):
    # Builds t_when_embed's label embeddings, so that only texts reach minilm below.
    classify(client, [tagged("Card 4111 1111 1111 1111 was charged twice.")], ["t_after_skip"])
    before = settled_stats(client)
    texts = [
        tagged("My card 4111 1111 1111 1111 was charged twice for one invoice."),
        tagged("The app crashes whenever I open the settings page."),
        tagged("Thanks, everything works now."),
        tagged("Please call me back on 555-123-4567, the printer is broken."),
    ]
    rows = classify(client, texts, ["t_when_rule", "t_after_skip"], with_deps=True)
    after = settled_stats(client)

    held = [0, 3]  # the texts with personal data
    for index in held:
        for name in CONDITIONED:
            result = rows[index][name]
            assert result["skipped"] is False and result["reason"] is None, name
            assert result["label"] is not None
    assert rows[0]["t_when_rule"]["label"] == "restricted"
    assert rows[3]["t_when_rule"]["label"] == "contact"
    assert rows[0]["t_when_embed"]["label"] in ("billing", "support")
    for index in (1, 2):
        row = rows[index]
        assert row["t_pii"]["fields"]["count"] == 0 and row["t_pii"]["skipped"] is False
        for name in CONDITIONED:
            assert row[name]["skipped"] is True, name
            assert row[name]["label"] is None and row[name]["probabilities"] == {}
        assert row["t_when_rule"]["reason"] == "condition not met: t_pii.count > 0"
        assert row["t_when_embed"]["reason"] == "condition not met: t_pii.count > 0"
        assert row["t_after_skip"]["reason"] == "dependency 't_when_embed' was skipped"

    skipped = 2 * len(CONDITIONED)  # two texts, each skipped by three capabilities
    saved = after["executions_saved_by_conditions"] - before["executions_saved_by_conditions"]
    assert saved == skipped
    for name in CONDITIONED:
        counted = after["capabilities"][name]["skipped_by_condition"]
        counted_before = before["capabilities"].get(name, {}).get("skipped_by_condition", 0)
        assert counted - counted_before == 2, name
    minilm = after["engines"]["work"]["minilm"]["requests"]
    assert minilm - before["engines"]["work"]["minilm"]["requests"] == len(held)
