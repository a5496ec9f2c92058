"""Seeded benchmark workloads.

- mixed (default): like seed 001, requests ask for different capability sets;
- long: the texts are long prompts of their own (bench.long_texts) instead of one-liners;
- pack: every request asks every LLM question of the shipped pack (and what they depend on).

In every workload some texts repeat within a phase (the same prompt sent by several clients),
and the phase tag keeps phases apart: no phase reuses another phase's texts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from bench.long_texts import long_text
from capabilities.registry import CapabilityRegistry

CAPABILITY_SETS: tuple[tuple[str, ...], ...] = (
    ("topic",),  # classification only
    ("topic", "route"),  # classification plus a recommendation that depends on one
    ("sentiment", "escalation"),  # an alert that depends on a classification
    ("topic", "sentiment"),
    ("route",),
)

_TEMPLATES = (
    "Write a {lang} function that {task}.",
    "My {lang} code {bug}. Can you fix it?",
    "What is {a} times {b}?",
    "Summarize this article about {subject} in three sentences.",
    "I love my new {product}, it works perfectly and I use it every day!",
    "The {product} I bought broke after two days and support never answered. I want a refund.",
    "Translate 'where is the {place}?' into {language}.",
    "Write a short poem about {subject}.",
    "What is the capital of {country}?",
    "Plan a {days}-day trip to {city} on a budget of {money} dollars.",
    "Explain step by step how {subject} works, with the math behind it.",
)
_FILL = {
    "lang": ["Python", "Rust", "Go", "JavaScript", "Java"],
    "task": [
        "reverses a linked list",
        "parses a CSV file",
        "merges two sorted lists",
        "validates an email address",
        "computes a moving average",
    ],
    "bug": ["crashes on empty input", "leaks memory", "returns the wrong total", "hangs forever"],
    "subject": [
        "climate change",
        "the stock market",
        "vaccines",
        "black holes",
        "the election",
        "football tactics",
        "jazz music",
        "electric cars",
        "sourdough bread",
    ],
    "product": ["phone", "laptop", "blender", "headphones", "vacuum cleaner", "camera"],
    "place": ["train station", "library", "nearest pharmacy", "hotel"],
    "language": ["French", "Spanish", "German", "Japanese"],
    "country": ["France", "Peru", "Kenya", "Norway", "Vietnam"],
    "city": ["Lisbon", "Kyoto", "Cape Town", "Montreal"],
}


@dataclass(frozen=True)
class BenchRequest:
    texts: tuple[str, ...]
    capabilities: tuple[str, ...]


def _text(rng: random.Random, tag: str) -> str:
    template = rng.choice(_TEMPLATES)
    values = {key: rng.choice(options) for key, options in _FILL.items()}
    values.update(
        a=str(rng.randint(11, 99)),
        b=str(rng.randint(11, 99)),
        days=str(rng.randint(2, 9)),
        money=str(rng.randint(3, 30) * 100),
    )
    # The tag keeps phases apart: no phase reuses another phase's texts or their cached prompts.
    return f"{template.format(**values)} (ref {tag})"


def _long_text(rng: random.Random, tag: str) -> str:
    return long_text(rng, f"ref {tag}")


def pack_capabilities(registry: CapabilityRegistry) -> tuple[str, ...]:
    """Every LLM question of the registry plus what they depend on, dependencies first."""
    questions = [spec.name for spec in registry.specs() if spec.kind.startswith("llm_")]
    return tuple(registry.resolve(questions))


def make_workload(
    seed: int,
    phase: str,
    requests: int,
    duplicate_rate: float = 0.25,
    hot_texts: int = 8,
    *,
    long: bool = False,
    capability_sets: Sequence[tuple[str, ...]] = CAPABILITY_SETS,
) -> list[BenchRequest]:
    """`requests` requests of 1 to 4 texts; each text is, with probability `duplicate_rate`,
    one of `hot_texts` texts several requests of the phase share, else a fresh one."""
    if not 0.0 <= duplicate_rate <= 1.0:
        raise ValueError(f"duplicate_rate must be in [0, 1], got {duplicate_rate}")
    make_text = _long_text if long else _text
    rng = random.Random(f"{seed}-{phase}")
    hot = [make_text(rng, f"{phase}-hot{i}") for i in range(hot_texts)]
    out = []
    counter = 0
    for _ in range(requests):
        texts = []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < duplicate_rate:
                texts.append(rng.choice(hot))
            else:
                counter += 1
                texts.append(make_text(rng, f"{phase}-{counter}"))
        out.append(BenchRequest(tuple(texts), rng.choice(capability_sets)))
    return out
