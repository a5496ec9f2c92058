"""The cores a Ray Serve replica binds its engines to, from its rank on the node (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def replica_cores(local_rank: int, replica_cpus: float, cores: Sequence[int]) -> list[int]:
    """Replica r of k = ceil(replica_cpus) cores each gets cores[r*k:(r+1)*k], so replicas on
    one node do not share; past the last core the ranks wrap around (more replicas than the
    node has cores for: they share, as Ray's CPU accounting would not let them be placed
    otherwise)."""
    if not cores:
        raise ValueError("no core to bind to")
    if local_rank < 0:
        raise ValueError(f"replica rank {local_rank} is negative")
    per_replica = min(max(math.ceil(replica_cpus), 1), len(cores))
    slots = max(len(cores) // per_replica, 1)
    start = (local_rank % slots) * per_replica
    return list(cores[start : start + per_replica])
