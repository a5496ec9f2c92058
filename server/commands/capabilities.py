"""`capserve capabilities list|validate`: the capability set a configuration serves, and a
check of a capability folder before it is deployed or hot-reloaded.

Both load the set exactly as the server does on a reload (same loader, same checks, the
configuration's models), so `validate` passing means a reload of that folder would too. No
engine starts: a classifier's labels come from its model's config file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from capabilities.loader import CapabilityConfigError
from capabilities.registry import CapabilityRegistry
from capabilities.spec import CapabilitySpec
from server.execution.capability_set import load_servable_registry
from server.settings import load_config

COLUMNS = ("name", "kind", "model", "layout", "depends_on", "when", "version")
WHEN_WIDTH = 40


def add_capabilities_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a table of the configured capability set")
    validate = actions.add_parser(
        "validate", help="check a capability folder with the configuration's models"
    )
    validate.add_argument("path", type=Path, help="the folder of capability YAML files")
    for action in (listing, validate):
        # Also accepted after the action; SUPPRESS keeps a --config given before it.
        action.add_argument("--config", type=Path, default=argparse.SUPPRESS)


def run_capabilities(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.action == "validate":
        config = config.model_copy(update={"capabilities_dir": args.path})
    try:
        registry = load_servable_registry(config)
    except CapabilityConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"capserve: {len(exc.problems)} problem(s) in {config.capabilities_dir}",
            file=sys.stderr,
        )
        return 1
    if args.action == "validate":
        print(f"{len(registry.names())} capabilities valid")
    else:
        print("\n".join(capability_table(registry)))
    return 0


def capability_table(registry: CapabilityRegistry) -> list[str]:
    """One line per capability, in execution order, columns aligned."""
    rows = [COLUMNS, *(_row(spec) for spec in registry.specs())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return [_line(row, widths) for row in rows]


def _row(spec: CapabilitySpec) -> tuple[str, ...]:
    return (
        spec.name,
        spec.kind,
        spec.model or "-",
        spec.layout or "-",
        ",".join(spec.depends_on) or "-",
        _shortened(spec.definition.when),
        spec.version,
    )


def _shortened(when: str | None) -> str:
    if when is None:
        return "-"
    flat = " ".join(when.split())
    return flat if len(flat) <= WHEN_WIDTH else flat[: WHEN_WIDTH - 1] + "…"


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
