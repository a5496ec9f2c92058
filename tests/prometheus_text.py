"""Reads the Prometheus text exposition in tests: samples by name and labels, and families."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]


def parse_samples(text: str) -> Samples:
    """Sample name (with its _total, _bucket... suffix) -> sorted labels -> value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for key, v in samples.get(name, {}).items() if wanted <= set(key))


def families(text: str) -> set[str]:
    """Every family named in the exposition, with or without samples (the _created timestamps
    prometheus-client adds, which the parser reads as families of their own, left out)."""
    return {
        family.name
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")
    }
