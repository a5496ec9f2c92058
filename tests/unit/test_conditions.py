"""Conditions (`when:` and rule expressions): what parses, what it means, what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from capabilities.conditions import (
    MAX_LENGTH,
    ConditionError,
    ConditionEvaluationError,
    parse_condition,
)
from capabilities.results import CapabilityResult


def result(
    name: str,
    label: str | None = None,
    confidence: float = 1.0,
    score: float | None = None,
    labels: tuple[str, ...] | None = None,
    fields: dict[str, Any] | None = None,
    path: tuple[str, ...] | None = None,
) -> CapabilityResult:
    probabilities = {label: confidence} if label else {}
    return CapabilityResult(
        name,
        "v1",
        label,
        confidence,
        probabilities,
        score=score,
        labels=labels,
        fields=fields,
        path=path,
    )


DEPS = {
    "topic": result("topic", "science", 0.8, path=("stem", "science")),
    "pii": result(
        "pii", "email", labels=("email", "phone"), fields={"count": 3, "matches": [1, 2, 3]}
    ),
    "complexity": result("complexity", score=0.625, fields={"prompt_complexity_score": 0.625}),
    "extract": result(
        "extract",
        fields={
            "intent": "refund",
            "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 5}],
            "meta": {"urgent": True, "tags": ["x", "y"], "odd-key": 7},
            "nothing": None,
        },
    ),
    "unscored": result("unscored", "yes"),
}


def holds(source: str) -> bool:
    return parse_condition(source).holds(DEPS)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # comparisons on the result's own attributes
        ("topic.label == 'science'", True),
        ("topic.label != 'science'", False),
        ("topic.confidence >= 0.8", True),
        ("topic.confidence > 0.8", False),
        ("complexity.score < 0.7", True),
        # and / or / not, with precedence
        ("topic.label == 'science' and pii.count > 2", True),
        ("topic.label == 'art' and pii.count > 2", False),
        ("topic.label == 'art' or pii.count > 2", True),
        ("not topic.label == 'art'", True),
        ("not (topic.label == 'science' and pii.count > 2)", False),
        ("topic.label == 'art' or topic.label == 'law' or complexity.score > 0.6", True),
        # chained comparisons
        ("0.5 < complexity.score < 0.7", True),
        ("0.5 < complexity.score < 0.6", False),
        ("1 <= pii.count <= 3 < 4", True),
        # in / not in lists, tuples and sets; membership in a result's list
        ("topic.label in ['science', 'art']", True),
        ("topic.label in ('law', 'art')", False),
        ("topic.label not in {'law', 'art'}", True),
        ("'phone' in pii.labels", True),
        ("'iban' not in pii.labels", True),
        ("'stem' in topic.path", True),
        ("topic.path[-1] == 'science'", True),
        # len() of lists and strings
        ("len(pii.labels) == 2", True),
        ("len(pii.matches) > 3", False),
        ("len(topic.label) == 7", True),
        # arithmetic, with precedence and unary signs
        ("pii.count * 2 + 1 == 7", True),
        ("(pii.count - 1) / 4 == 0.5", True),
        ("complexity.score * 10 - pii.count > 3", True),
        ("-pii.count < 0 and +pii.count == 3", True),
        # fields through `fields`, by attribute or by key
        ("complexity.prompt_complexity_score > 0.5", True),
        ("pii['count'] == 3", True),
        ("extract.intent == 'refund'", True),
        # JSON sub-fields via `.` and `[...]`
        ("extract.meta.urgent", True),
        ("extract.meta.urgent == True", True),
        ("extract.items[1].qty == 5", True),
        ("extract.items[0]['sku'] == 'a-1'", True),
        ("extract.meta['odd-key'] == 7", True),
        ("'y' in extract.meta.tags", True),
        ("len(extract.items) == 2 and extract.items[-1].sku == 'b-2'", True),
        ("extract.nothing == None", True),
        ("topic.probabilities['science'] == 0.8", True),
        ("topic.probabilities.science == 0.8", True),
        # literals on their own
        ("True", True),
        ("1 > 2", False),
    ],
)
def test_accepted_expressions_mean_what_python_means(source: str, expected: bool):
    assert holds(source) is expected


def test_the_names_read_are_collected_for_the_loader():
    condition = parse_condition(
        "topic.label == 'x' and len(pii.labels) > 0 or extract.items[0].qty > complexity.score"
    )
    assert condition.names == frozenset({"topic", "pii", "extract", "complexity"})
    assert parse_condition("1 < 2").names == frozenset()


def test_and_or_stop_at_the_first_deciding_value():
    # The right side would fail (a missing field): it is never evaluated.
    assert holds("pii.count > 0 or pii.no_such_field > 1")
    assert not holds("pii.count > 5 and pii.no_such_field > 1")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("open('x')", "the only function allowed is len(x)"),
        ("pii.count.bit_length() > 1", "the only function allowed is len(x)"),
        ("len(pii.labels, 2) > 1", "the only function allowed is len(x)"),
        ("len(obj=pii.labels) > 1", "the only function allowed is len(x)"),
        ("len(*pii.labels) > 1", "Starred is not allowed"),
        ("pii.__class__ == 1", "field '__class__' is not allowed"),
        ("pii._private == 1", "field '_private' is not allowed"),
        ("pii['__dict__'] == 1", "field '__dict__' is not allowed"),
        ("(lambda: 1)()", "the only function allowed is len(x)"),
        ("(lambda: 1) == 1", "Lambda is not allowed"),
        ("[x for x in pii.labels] == []", "ListComp is not allowed"),
        ("any(x for x in pii.labels)", "the only function allowed is len(x)"),
        ("{x for x in pii.labels} == 1", "SetComp is not allowed"),
        ("{'a': 1} == 1", "Dict is not allowed"),
        ("f'{pii.count}' == '3'", "JoinedStr is not allowed"),
        ("(y := pii.count) > 1", "NamedExpr is not allowed"),
        ("1 if pii.count else 0", "IfExp is not allowed"),
        ("[*pii.labels] == []", "Starred is not allowed"),
        ("pii.count ** 2 > 1", "operator Pow is not allowed"),
        ("pii.count % 2 == 1", "operator Mod is not allowed"),
        ("pii.count // 2 == 1", "operator FloorDiv is not allowed"),
        ("pii.count << 2 == 1", "operator LShift is not allowed"),
        ("~pii.count == 1", "operator Invert is not allowed"),
        ("pii.label is None", "operator Is is not allowed"),
        ("pii.matches[0:2] == []", "an index must be a literal"),
        ("pii.matches[pii.count] == 1", "an index must be a literal"),
        ("pii == 'email'", "'pii' is a whole result: name one of its fields"),
        ("len(pii) > 0", "'pii' is a whole result"),
        ("b'x' == pii.label", "literal b'x' is not allowed"),
        ("pii.count == 1j", "literal 1j is not allowed"),
        ("pii.count >", "is not a valid expression"),
        ("pii.count = 1", "is not a valid expression"),
        ("import os", "is not a valid expression"),
        ("pii.count > 1; 2", "is not a valid expression"),
        ("x" * (MAX_LENGTH + 1), f"is longer than {MAX_LENGTH} characters"),
        ("not " * 240 + "pii.label", "has more than 200 parts"),
        ("(" * 300 + "1" + ")" * 300, "is not a valid expression"),
        ("pii.count\x00 > 1", "is not a valid expression"),
    ],
)
def test_rejected_constructs_say_why(source: str, message: str):
    with pytest.raises(ConditionError) as caught:
        parse_condition(source)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("pii.no_such_field > 1", "'pii' has no field 'no_such_field'"),
        ("extract.meta.missing == 1", "no field 'missing'"),
        ("extract.items[5].qty > 1", "IndexError"),
        ("extract.meta['nope'] == 1", "KeyError"),
        ("extract.intent.length > 1", "no field 'length'"),
        ("pii.count[0] == 1", "int has no item 0"),
        # None compared with a number: an llm_score-less result, or a JSON null
        ("unscored.score > 0.5", "TypeError"),
        ("extract.nothing < 1", "TypeError"),
        ("topic.label > 1", "TypeError"),
        ("pii.count / 0 > 1", "ZeroDivisionError"),
        ("pii.labels * 100000000 == []", "arithmetic needs numbers"),
        ("topic.label + 'x' == 'y'", "arithmetic needs numbers"),
        ("-topic.label == 1", "a sign needs a number"),
        ("len(pii.count) > 0", "TypeError"),
        ("1 in pii.count", "TypeError"),
        ("absent.label == 'x'", "no result of 'absent'"),
    ],
)
def test_evaluation_errors_raise_condition_evaluation_error(source: str, message: str):
    condition = parse_condition(source)
    with pytest.raises(ConditionEvaluationError) as caught:
        condition.holds(DEPS)
    assert message in str(caught.value)


def test_evaluation_errors_never_quote_result_values():
    # The value compared is result data (which may come from the text): only types are named.
    deps = {"extract": result("extract", fields={"secret": "SECRET VALUE", "items": []})}
    for source in ("extract.secret > 1", "extract.secret - 1 > 0", "extract.items[0] == 1"):
        with pytest.raises(ConditionEvaluationError) as caught:
            parse_condition(source).holds(deps)
        assert "SECRET" not in str(caught.value)


def test_a_condition_is_parsed_once_and_reused():
    assert parse_condition("pii.count > 0") is parse_condition("pii.count > 0")
