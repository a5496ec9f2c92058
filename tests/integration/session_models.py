"""Models the session server loads besides the shipped ones, built for the tests on the spot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def extra_models(folder: Path) -> dict[str, dict[str, Any]]:
    """Model name -> its config entry (as in configs/default.yaml's `models`)."""
    return {}
