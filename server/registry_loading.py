"""Loads the capability set a configuration describes: at start-up, on reload, in the CLI."""

from __future__ import annotations

from capabilities.registry import CapabilityRegistry
from processors.model_store import classifier_labels
from schemas.config import CapServeConfig, ModelConfig

# The ModelConfig fields the fingerprint always spells out; any other field counts when it is
# not at its default.
_CORE_FIELDS = ("source", "dtype", "block_size", "max_model_len", "engine_args")


def model_fingerprints(config: CapServeConfig) -> dict[str, str]:
    """What of each model's configuration can change a capability's output: every field but
    those left at their defaults, so that a reload that replaces a model's engine (any change
    to its ModelConfig) gives its capabilities new versions."""
    return {name: _fingerprint(model) for name, model in config.models.items()}


def _fingerprint(m: ModelConfig) -> str:
    core = f"{m.source}|{m.dtype}|block={m.block_size}|len={m.max_model_len}|{m.engine_args}"
    others = m.model_dump(exclude_defaults=True, exclude=set(_CORE_FIELDS) | {"runner"})
    return core + "".join(f"|{key}={value}" for key, value in sorted(others.items()))


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
