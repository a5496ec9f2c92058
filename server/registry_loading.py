"""Loads the capability set a configuration describes: at start-up, on reload, in the CLI."""

from __future__ import annotations

from capabilities.registry import CapabilityRegistry
from processors.model_store import classifier_labels
from schemas.config import CapServeConfig


def model_fingerprints(config: CapServeConfig) -> dict[str, str]:
    """What of each model's configuration can change a capability's output."""
    return {
        name: f"{m.source}|{m.dtype}|block={m.block_size}|len={m.max_model_len}|{m.engine_args}"
        for name, m in config.models.items()
    }


def load_registry(config: CapServeConfig) -> CapabilityRegistry:
    """Reads and checks `config.capabilities_dir`; raises CapabilityConfigError with every
    problem of the set as a whole."""
    runners = {name: model.runner for name, model in config.models.items()}
    return CapabilityRegistry.from_directory(
        config.capabilities_dir,
        runners,
        model_fingerprints(config),
        config.prompting,
        classifier_labels(config),
    )
