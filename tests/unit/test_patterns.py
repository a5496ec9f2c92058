"""The built-in patterns of kind `regex`: their checks and the spans they report."""

from __future__ import annotations

import time

import pytest

from capabilities.patterns import (
    BUILTINS,
    TextMatches,
    builtin_spans,
    card_valid,
    iban_valid,
    luhn_valid,
)


def found(name: str, text: str) -> list[str]:
    return [text[start:end] for start, end in builtin_spans(name, text)]


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",  # Visa test number
        "5500005555555559",  # Mastercard
        "378282246310005",  # Amex, 15 digits
        "4222222222222",  # 13 digits
        "6011111111111117",  # Discover
        "3530111333300000",  # JCB
        "4111111111111111110",  # 19 digits, Luhn-valid
    ],
)
def test_luhn_valid_cards(number: str):
    assert luhn_valid(number)
    assert card_valid(number)


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111112",  # last digit off by one
        "4111111111111121",  # two digits swapped
        "5500005555555558",
        "411111111111",  # 12 digits: too short, though Luhn-valid
        "41111111111111111111114",  # too long
        "",
        "4111a11111111111",
    ],
)
def test_luhn_invalid_or_wrong_length_cards(number: str):
    assert not card_valid(number)


@pytest.mark.parametrize(
    "iban",
    [
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "DE89 3704 0044 0532 0130 00",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "BE68539007547034",  # the shortest kind: 16 characters
        "gb82 west 1234 5698 7654 32",  # the check is case-blind
    ],
)
def test_valid_ibans(iban: str):
    assert iban_valid(iban)


@pytest.mark.parametrize(
    "iban",
    [
        "GB83 WEST 1234 5698 7654 32",  # wrong check digits
        "GB82 WEST 1234 5698 7654 33",  # wrong account digit
        "GB82WEST1234",  # too short
        "1282WEST12345698765432",  # no country letters
        "GBX2WEST12345698765432",  # check digits not digits
        "GB82 WEST 1234 5698 7654 3!",
    ],
)
def test_invalid_ibans(iban: str):
    assert not iban_valid(iban)


def test_card_spans_with_spaces_or_dashes_and_only_luhn_valid_ones():
    text = "Visa 4111 1111 1111 1111, Amex 3782-822463-10005, typo 4111 1111 1111 1112."
    assert found("credit_card", text) == ["4111 1111 1111 1111", "3782-822463-10005"]
    start = text.index("4111")
    assert builtin_spans("credit_card", text)[0] == (start, start + len("4111 1111 1111 1111"))


def test_a_card_inside_a_longer_digit_run_is_not_reported():
    # 4111111111111111 is Luhn-valid, but here it is part of a 24-digit number.
    assert found("credit_card", "ref 41111111111111110000 0000") == []
    assert found("credit_card", "ref 12344111111111111111") == []
    assert found("credit_card", "double  separators 4111  1111  1111  1111") == []


def test_iban_spans_grouped_and_compact():
    text = "Pay GB82 WEST 1234 5698 7654 32 or NL91ABNA0417164300, not GB83 WEST 1234 5698 7654 32."
    assert found("iban", text) == ["GB82 WEST 1234 5698 7654 32", "NL91ABNA0417164300"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+tag@example.co.uk today", ["jane.doe+tag@example.co.uk"]),
        ("a@b.io and x_y-z@sub.domain.org", ["a@b.io", "x_y-z@sub.domain.org"]),
        ("mail me (bob@example.com).", ["bob@example.com"]),
        ("not an address: bob@localhost or @example.com or bob@.com", []),
        ("dots: .bob@example.com bob.@example.com bo..b@example.com", []),
    ],
)
def test_emails(text: str, expected: list[str]):
    assert found("email", text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call +1 (555) 123-4567 now", ["+1 (555) 123-4567"]),
        ("call +44 20 7946 0958.", ["+44 20 7946 0958"]),
        ("call 555.123.4567 or 555-123-4567", ["555.123.4567", "555-123-4567"]),
        ("call (020) 7946 0958", ["(020) 7946 0958"]),
        ("call 0044 20 7946 0958", ["0044 20 7946 0958"]),
        ("call 5551234567", ["5551234567"]),
        ("call +49-30-1234567", ["+49-30-1234567"]),
    ],
)
def test_phones_in_international_and_national_formats(text: str, expected: list[str]):
    assert found("phone", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "short 12 34 56",  # 6 digits
        "long +1 234 567 890 123 456 78",  # 16 digits
        "on 2024-01-15",  # a date
        "on 15/01/2024",
        "from 192.168.100.200",  # an IPv4 address
        "pi is 3.14159265",  # a decimal
        "price 1,234,567",
        "model X1234567",  # part of a word
    ],
)
def test_not_phones(text: str):
    assert found("phone", text) == []


def test_phones_are_not_reported_inside_cards_ibans_or_emails():
    text = (
        "card 4111 1111 1111 1111, iban GB82 WEST 1234 5698 7654 32, "
        "bad iban GB83 WEST 1234 5698 7654 32, mail 5551234567@example.com, "
        "phone 555-123-4567"
    )
    assert found("phone", text) == ["555-123-4567"]
    assert found("credit_card", text) == ["4111 1111 1111 1111"]
    assert found("iban", text) == ["GB82 WEST 1234 5698 7654 32"]
    assert found("email", text) == ["5551234567@example.com"]


def test_a_luhn_invalid_digit_run_may_still_be_a_phone():
    # 14 digits failing the Luhn check: no card, so the phone pattern may have them.
    assert found("credit_card", "call 0044 20 7946 0958") == []
    assert found("phone", "call 0044 20 7946 0958") == ["0044 20 7946 0958"]


def test_each_builtin_is_matched_once_per_text():
    matches = TextMatches("card 4111 1111 1111 1111 phone 555-123-4567")
    first = matches.spans("credit_card")
    matches.spans("phone")  # reads the card spans again
    assert matches.spans("credit_card") is first


def test_every_builtin_of_the_schema_exists():
    assert set(BUILTINS) == {"email", "phone", "credit_card", "iban"}


@pytest.mark.parametrize(
    "text",
    [
        "1" * 4000,
        "1 " * 2000,
        "12-" * 1300,
        "a" * 2000 + "@" + "b." * 900,
        "A1" * 2000,
        "+(" * 2000,
    ],
)
def test_adversarial_texts_match_quickly(text: str):
    started = time.perf_counter()
    for name in BUILTINS:
        builtin_spans(name, text)
    assert time.perf_counter() - started < 0.5
