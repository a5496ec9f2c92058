"""server.blas_threads: the server process's own BLAS threads (server/blas_threads.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from server.settings import load_config

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import numpy  # loads OpenBLAS
from server.blas_threads import blas_pools, limit_blas_threads
before = [p["num_threads"] for p in blas_pools()]
limit_blas_threads(None if sys.argv[1] == "none" else int(sys.argv[1]))
print(json.dumps({"before": before, "after": [p["num_threads"] for p in blas_pools()]}))
"""


def _threads(setting: str) -> dict[str, list[int]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, setting],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"},
    )
    found: dict[str, list[int]] = json.loads(done.stdout)
    return found


def test_the_limit_caps_numpy_blas_and_none_leaves_it():
    capped = _threads("1")
    assert capped["before"] and all(n == 2 for n in capped["before"])
    assert capped["after"] == [1] * len(capped["before"])
    assert _threads("none")["after"] == _threads("none")["before"]


def test_the_default_is_one_thread_and_the_environment_overrides_it():
    assert load_config(REPO / "configs/default.yaml", environ={}).server.blas_threads == 1
    env = {"CAPSERVE__SERVER__BLAS_THREADS": "2"}
    assert load_config(REPO / "configs/default.yaml", environ=env).server.blas_threads == 2
