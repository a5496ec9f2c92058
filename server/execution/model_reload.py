"""The models half of a reload: re-reads the config file's `models` section, and starts the
engines of the models it adds or changes, reporting every failure as a problem of the reload
(CapabilityConfigError: HTTP 422, nothing changed, nothing left running)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from capabilities.loader import CapabilityConfigError
from processors.model_store import ModelNotReadyError
from processors.model_swap import ModelChanges, StartedEngines
from processors.placement import PlacementError
from processors.pool import ProcessorPool
from schemas.config import CapServeConfig, ModelConfig
from server.settings import ConfigError, load_config

# Sections a reload applies; the others (server, batching, auth...) apply at restart.
RELOADED_SECTIONS = ("models", "capabilities_dir")


@dataclass(frozen=True)
class ReloadedConfig:
    # The configuration in force, with the `models` section of the file.
    config: CapServeConfig
    # Sections that differ in the file from those in force, which the reload does not apply.
    restart_required: tuple[str, ...] = ()


def read_reloaded_config(current: CapServeConfig, path: Path | None) -> ReloadedConfig:
    """`current` with the `models` section of the file at `path` (and the environment
    overrides, as at start); with no path, `current` as it is. Blocking (a file read).
    Raises CapabilityConfigError when the file is not a valid configuration."""
    if path is None:
        return ReloadedConfig(current)
    try:
        fresh = load_config(path)
    except ConfigError as exc:
        raise CapabilityConfigError([str(exc)]) from None
    # `capserve serve --host/--port` override the file: not a change of the file.
    fresh.server.host, fresh.server.port = current.server.host, current.server.port
    differing = tuple(
        name
        for name in CapServeConfig.model_fields
        if name not in RELOADED_SECTIONS and getattr(fresh, name) != getattr(current, name)
    )
    return ReloadedConfig(current.model_copy(update={"models": fresh.models}), differing)


async def start_engines(
    pool: ProcessorPool,
    models: Mapping[str, ModelConfig],
    engines_up: bool,
    dry_run: bool = False,
) -> StartedEngines:
    """Checks that every model `models` adds or changes can be found, and unless `dry_run`
    starts its engine beside those in service (see ProcessorPool.start_models)."""
    changes = ModelChanges.between(pool.models, models)
    to_start = {name: models[name] for name in changes.to_start}
    try:
        pool.check_models(to_start)
    except (ModelNotReadyError, PlacementError) as exc:
        raise CapabilityConfigError([f"models: {exc}"]) from None
    if dry_run:
        return StartedEngines(dict(models), changes, {})
    if to_start and not engines_up:
        raise CapabilityConfigError(
            ["models: the engines are still starting; reload once the server is ready"]
        )
    try:
        return await pool.start_models(models)
    except ModelNotReadyError as exc:
        raise CapabilityConfigError([f"models: {exc}"]) from None
    except Exception as exc:
        raise CapabilityConfigError(
            [
                f"models {', '.join(changes.to_start)}: an engine failed to start "
                f"({type(exc).__name__}); nothing changed"
            ]
        ) from None
