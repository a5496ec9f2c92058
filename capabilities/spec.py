"""A validated capability, as the rest of the server sees it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from schemas.capability import CapabilityDefinition, LabelDefinition


@dataclass(frozen=True)
class CapabilitySpec:
    definition: CapabilityDefinition
    source: Path
    # A short hash of the definition: it changes whenever the definition does.
    version: str

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def kind(self) -> str:
        return self.definition.kind

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
        canonical = json.dumps(definition.model_dump(mode="json"), sort_keys=True)
        version = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        return cls(definition=definition, source=source, version=version)
