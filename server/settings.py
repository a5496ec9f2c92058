"""Loads the YAML configuration and applies environment overrides.

Overrides use the `CAPSERVE__` prefix and a double underscore between levels, for example
`CAPSERVE__BATCHING__WINDOW_MS=50` or `CAPSERVE__MODELS__SMOLLM2__SOURCE=/models/my-llm`.
Values are read as YAML scalars, so `true`, `50` and `0.5` get their natural types.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from processors.precision import AUTO, Hardware, choose_dtype, detect_hardware
from schemas.config import CapServeConfig

log = logging.getLogger(__name__)

ENV_PREFIX = "CAPSERVE__"
DEFAULT_CONFIG = Path("configs/default.yaml")


class ConfigError(Exception):
    """The configuration cannot be used; the message says which file and which key."""


def _apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    overrides = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if path:
            overrides.append((path, yaml.safe_load(raw) if raw != "" else None))
    return sorted(overrides)


def resolve_dtypes(config: CapServeConfig, hardware: Hardware | None = None) -> None:
    """Replaces every model's `dtype: auto` with the precision this hardware runs fastest, so
    that the engines, the capability versions and the benchmarks see the dtype in force."""
    for name, model in config.models.items():
        if model.dtype != AUTO:
            continue
        choice = choose_dtype(model.dtype, hardware or detect_hardware())
        log.info("model '%s': dtype auto -> %s (%s)", name, choice.dtype, choice.reason)
        model.dtype = choice.dtype


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    hardware: Hardware | None = None,
) -> CapServeConfig:
    """Reads `path` (default: $CAPSERVE_CONFIG or configs/default.yaml) plus env overrides;
    `dtype: auto` is resolved for `hardware` (default: this machine's)."""
    env = os.environ if environ is None else environ
    config_path = Path(path or env.get("CAPSERVE_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {config_path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {config_path} must hold a mapping at the top level")
    for key_path, value in _env_overrides(env):
        _apply_override(raw, key_path, value)
    try:
        config = CapServeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"config file {config_path}: {problems}") from None
    base = config_path.resolve().parent
    if not config.capabilities_dir.is_absolute():
        config.capabilities_dir = base / config.capabilities_dir
    drift = config.observability.drift
    if drift.reference_file is not None and not drift.reference_file.is_absolute():
        drift.reference_file = base / drift.reference_file
    if config.models_dir is None:
        cache_home = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        config.models_dir = cache_home / "capserve" / "models"
    resolve_dtypes(config, hardware)
    return config
