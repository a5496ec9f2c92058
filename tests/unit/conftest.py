from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from capabilities.registry import CapabilityRegistry
from tests.unit.fakes import CLASSIC_CAPABILITIES, SHIPPED_CAPABILITIES, SHIPPED_RUNNERS

# The seed-001 example as a DAG: A asks [classification], B [classification, recommendations],
# C [classification, alerts]; both later ones depend on classification.
SEED_DAG = [
    {
        "name": "classification",
        "kind": "embedding_similarity",
        "model": "minilm",
        "labels": ["question", "complaint", "request"],
    },
    {
        "name": "recommendations",
        "kind": "rule",
        "depends_on": ["classification"],
        "labels": ["faq", "agent"],
        "rule": {
            "cases": [{"when": {"classification": "question"}, "label": "faq"}],
            "default": "agent",
        },
    },
    {
        "name": "alerts",
        "kind": "rule",
        "depends_on": ["classification"],
        "labels": ["alert", "none"],
        "rule": {
            "cases": [{"when": {"classification": "complaint"}, "label": "alert"}],
            "default": "none",
        },
    },
]


@pytest.fixture
def write_capabilities(tmp_path: Path) -> Callable[..., Path]:
    """Writes definitions (one file each, or raw text) into a fresh directory."""

    def write(*definitions: dict[str, object] | str) -> Path:
        directory = tmp_path / "caps"
        directory.mkdir(exist_ok=True)
        for number, definition in enumerate(definitions):
            text = definition if isinstance(definition, str) else yaml.safe_dump(definition)
            (directory / f"{number:02d}.yaml").write_text(text)
        return directory

    return write


@pytest.fixture
def shipped_registry() -> CapabilityRegistry:
    return CapabilityRegistry.from_directory(SHIPPED_CAPABILITIES, SHIPPED_RUNNERS)


@pytest.fixture
def classic_registry() -> CapabilityRegistry:
    """The frozen capability set of mechanism tests (see fakes.CLASSIC_CAPABILITIES)."""
    return CapabilityRegistry.from_directory(CLASSIC_CAPABILITIES, SHIPPED_RUNNERS)


@pytest.fixture
def seed_registry(write_capabilities: Callable[..., Path]) -> CapabilityRegistry:
    return CapabilityRegistry.from_directory(write_capabilities(*SEED_DAG), SHIPPED_RUNNERS)
