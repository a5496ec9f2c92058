"""The `regex` processor: pattern matches with spans, no model.

Each label is a Python regular expression or a built-in pattern (capabilities/patterns.py). A
text's result lists the labels that matched and every match as a character span; the matched
text itself is never put in a result or a log, since it is often PII.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from capabilities.patterns import TextMatches
from capabilities.results import CapabilityResult
from capabilities.spec import CapabilitySpec
from processors.base import ItemOutcome, ProcessorInput, WindowContext

# Above this many characters in a batch, matching runs in a worker thread: it would hold the
# event loop for more than about a millisecond.
THREAD_THRESHOLD_CHARS = 20_000


@dataclass(frozen=True)
class LabelMatcher:
    label: str
    # A compiled custom pattern, or None for a built-in.
    pattern: re.Pattern[str] | None
    builtin: str | None

    def spans(self, matches: TextMatches) -> list[tuple[int, int]]:
        if self.pattern is None:
            return matches.spans(self.builtin or "")
        # An empty match marks a position, not a finding.
        return [m.span() for m in self.pattern.finditer(matches.text) if m.end() > m.start()]


def label_matchers(spec: CapabilitySpec) -> list[LabelMatcher]:
    return [
        LabelMatcher(
            label.name,
            re.compile(label.pattern) if label.pattern is not None else None,
            label.builtin,
        )
        for label in spec.labels
    ]


def match_text(
    spec: CapabilitySpec, matchers: Sequence[LabelMatcher], text: str
) -> CapabilityResult:
    text_matches = TextMatches(text)
    found: list[dict[str, Any]] = []
    matched: list[str] = []
    for matcher in matchers:
        spans = matcher.spans(text_matches)
        if spans:
            matched.append(matcher.label)
        found += [{"label": matcher.label, "start": start, "end": end} for start, end in spans]
    order = {matcher.label: n for n, matcher in enumerate(matchers)}
    found.sort(key=lambda m: (m["start"], m["end"], order[m["label"]]))
    return CapabilityResult(
        capability=spec.name,
        version=spec.version,
        label=matched[0] if matched else None,
        confidence=1.0,
        probabilities={m.label: (1.0 if m.label in matched else 0.0) for m in matchers},
        labels=tuple(matched),
        fields={"count": len(found), "matches": found},
    )


def match_texts(
    spec: CapabilitySpec, matchers: Sequence[LabelMatcher], texts: Sequence[str]
) -> list[ItemOutcome]:
    return [match_text(spec, matchers, text) for text in texts]


class RegexProcessor:
    kind = "regex"

    def __init__(self) -> None:
        # Compiled once per capability version.
        self._matchers: dict[tuple[str, str], list[LabelMatcher]] = {}

    def matchers(self, spec: CapabilitySpec) -> list[LabelMatcher]:
        key = (spec.name, spec.version)
        if key not in self._matchers:
            self._matchers[key] = label_matchers(spec)
        return self._matchers[key]

    async def run(
        self, spec: CapabilitySpec, inputs: Sequence[ProcessorInput], context: WindowContext
    ) -> Sequence[ItemOutcome]:
        matchers = self.matchers(spec)
        texts = [item.text for item in inputs]
        if sum(len(text) for text in texts) > THREAD_THRESHOLD_CHARS:
            return await asyncio.to_thread(match_texts, spec, matchers, texts)
        return match_texts(spec, matchers, texts)
