"""A validated capability, as the rest of the server sees it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from capabilities.groups import QuestionGroup
from schemas.capability import (
    PROMPT_KINDS,
    QUESTION_KINDS,
    CapabilityDefinition,
    LabelDefinition,
)


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CapabilitySpec:
    definition: CapabilityDefinition
    source: Path
    # A short hash of everything the capability's output depends on: its definition, and once
    # loaded, its model, its prompt layout (for `shared`, the group's whole system part) and
    # its dependencies' versions. It changes whenever any of them does.
    version: str
    # LLM questions: the layout in force (the definition's, or the server's override).
    layout: str | None = None
    # LLM questions: the group whose system part a `shared` question shares.
    group: QuestionGroup | None = None

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def kind(self) -> str:
        return self.definition.kind

    @property
    def is_question(self) -> bool:
        return self.definition.kind in QUESTION_KINDS

    @property
    def uses_prompt(self) -> bool:
        """An LLM prompt kind: laid out in a question group, shared or own."""
        return self.definition.kind in PROMPT_KINDS

    @property
    def model(self) -> str | None:
        return self.definition.model

    @property
    def depends_on(self) -> tuple[str, ...]:
        return self.definition.depends_on

    @property
    def labels(self) -> tuple[LabelDefinition, ...]:
        return self.definition.labels

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.definition.labels)

    @classmethod
    def from_definition(cls, definition: CapabilityDefinition, source: Path) -> CapabilitySpec:
        dumped = definition.model_dump(mode="json")
        if dumped["on_overflow"] == "truncate":  # the default leaves versions as they were
            del dumped["on_overflow"]
        canonical = json.dumps(dumped, sort_keys=True)
        return cls(definition=definition, source=source, version=short_hash(canonical))
