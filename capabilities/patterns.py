"""The built-in patterns of kind `regex`: email, phone, credit_card and iban.

Each is a compiled pattern plus a validity check that a pattern alone cannot express (the Luhn
check of a card, the ISO 13616 mod-97 check of an IBAN), and the built-ins whose matches win
over it: a phone number is never reported inside a card number, an IBAN or an email address,
whose digit runs it would otherwise match.

Matches are character spans; nothing here keeps or logs the matched text (it is PII).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Span = tuple[int, int]


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (every second digit from the right doubled)."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _digits(candidate: str) -> str:
    return "".join(char for char in candidate if char.isdigit())


def card_valid(candidate: str) -> bool:
    digits = _digits(candidate)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def iban_valid(candidate: str) -> bool:
    """ISO 13616: country code, check digits, 11-30 alphanumerics; the number formed by moving
    the first four characters to the end (letters as 10-35) is 1 modulo 97."""
    compact = candidate.replace(" ", "").upper()
    if not (15 <= len(compact) <= 34 and compact.isascii() and compact.isalnum()):
        return False
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


# Shapes of digit runs that look like phone numbers but are something else.
_NOT_PHONE = re.compile(
    r"\d{4}-\d{2}-\d{2}"  # ISO date
    r"|\d{1,2}[./-]\d{1,2}[./-]\d{4}"  # day/month/year
    r"|\d{1,3}(?:\.\d{1,3}){3}"  # IPv4 address
)


def phone_valid(candidate: str) -> bool:
    return 7 <= len(_digits(candidate)) <= 15 and _NOT_PHONE.fullmatch(candidate) is None


def email_valid(candidate: str) -> bool:
    local = candidate.rsplit("@", 1)[0]
    return (
        len(candidate) <= 254
        and len(local) <= 64
        and ".." not in candidate
        and not local.startswith(".")
        and not local.endswith(".")
    )


@dataclass(frozen=True)
class Builtin:
    name: str
    pattern: re.Pattern[str]
    # Whether a candidate the pattern found really is one (applied to the matched text).
    is_valid: Callable[[str], bool]
    # Built-ins whose matches win: a candidate overlapping one of them is not reported.
    yields_to: tuple[str, ...] = ()
    # Whether a candidate that fails the check still keeps the built-ins yielding to this one off
    # its span: an IBAN's shape (letters, check digits, groups) is no phone number even when
    # its checksum is wrong, while a digit run failing the Luhn check may well be one.
    claims_invalid: bool = False


BUILTINS: Mapping[str, Builtin] = {
    "email": Builtin(
        "email",
        re.compile(
            r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
            r"(?![\w-])"
        ),
        email_valid,
        claims_invalid=True,
    ),
    "credit_card": Builtin(
        "credit_card",
        # 13-19 digits, single spaces or dashes between them; not part of a longer digit run.
        re.compile(r"(?<![\w-])(?<!\d )(?:\d[ -]?){12,18}\d(?![ -]?\d)"),
        card_valid,
        yields_to=("iban",),
    ),
    "iban": Builtin(
        "iban",
        # Compact, or printed in groups of four separated by single spaces.
        re.compile(
            r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}"
            r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)"
            r"(?![A-Za-z0-9])"
        ),
        iban_valid,
        claims_invalid=True,
    ),
    "phone": Builtin(
        "phone",
        # Optional +country code and (area code), then groups of 2-4 digits separated by at most
        # one space, dash or dot; not inside a word, a longer number or a decimal.
        re.compile(
            r"(?<![\w+])(?<!\d[.,])"
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?"
            r"\d{2,4}(?:[ .-]?\d{2,4}){1,6}"
            r"(?![\w]|[ .,-]?\d)"
        ),
        phone_valid,
        yields_to=("credit_card", "iban", "email"),
    ),
}


def _overlaps(span: Span, others: list[Span]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in others)


class TextMatches:
    """The built-ins' matches in one text, each built-in matched once however many labels (or
    other built-ins yielding to it) need it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._candidates: dict[str, list[tuple[Span, bool]]] = {}
        self._spans: dict[str, list[Span]] = {}

    def candidates(self, name: str) -> list[tuple[Span, bool]]:
        """Every span the pattern finds, and whether it passes the check."""
        if name not in self._candidates:
            builtin = BUILTINS[name]
            self._candidates[name] = [
                (match.span(), builtin.is_valid(match.group()))
                for match in builtin.pattern.finditer(self.text)
            ]
        return self._candidates[name]

    def claimed(self, name: str) -> list[Span]:
        """The spans built-in `name` keeps the built-ins yielding to it off."""
        if BUILTINS[name].claims_invalid:
            return [span for span, _ in self.candidates(name)]
        return self.spans(name)

    def spans(self, name: str) -> list[Span]:
        """The spans of valid matches of built-in `name`, in text order."""
        if name not in self._spans:
            builtin = BUILTINS[name]
            taken = [span for other in builtin.yields_to for span in self.claimed(other)]
            self._spans[name] = [
                span
                for span, valid in self.candidates(name)
                if valid and not _overlaps(span, taken)
            ]
        return self._spans[name]


def builtin_spans(name: str, text: str) -> list[Span]:
    """The spans of valid matches of built-in `name` in `text`, in text order."""
    return TextMatches(text).spans(name)
