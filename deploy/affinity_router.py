"""The request router of the replica deployment, on Ray Serve's request-router API: a request
goes to the replica that has seen its texts (their results in its L1 cache, their KV blocks
in its engines' prefix caches), unless that replica is busy.

- Affinity: replicas are ranked by rendezvous hash of (the request's `affinity` key, replica
  id). Every caller ranks alike with no shared state, and when a replica leaves or joins only
  the keys that ranked it first move.
- Load: queue lengths (Ray Serve's cache of them, probed when missing) are compared; when the
  first-ranked replica holds more than `imbalance_threshold` requests beyond the least loaded
  one, the least loaded ones come first. A full replica refuses the request and the next rank
  is tried, as Ray Serve does for every router.
- A request with no key (health, stats, a body with no texts) goes to the least loaded of two
  random replicas, as Ray Serve's default router does.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import Any

from ray.serve.request_router import (
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    RequestRouter,
    RunningReplica,
)

DEFAULT_IMBALANCE_THRESHOLD = 8


def rendezvous_rank(key: str, replica_ids: Sequence[str]) -> list[str]:
    """`replica_ids` ranked for `key`, highest score first (a stable hash, not Python's)."""

    def score(replica_id: str) -> bytes:
        return hashlib.blake2b(f"{key}|{replica_id}".encode(), digest_size=8).digest()

    return sorted(replica_ids, key=score, reverse=True)


def affinity_order(
    key: str, queue_lens: Mapping[str, int | None], imbalance_threshold: int
) -> list[list[str]]:
    """The ranks to try, each a list of replica ids (Ray Serve takes the least loaded
    replica of the first rank that has one accepting). `queue_lens`: None for unknown."""
    ranked = rendezvous_rank(key, list(queue_lens))
    known = {r: n for r, n in queue_lens.items() if n is not None}
    first = ranked[0]
    if known and first in known:
        lowest = min(known.values())
        if known[first] - lowest > imbalance_threshold:
            least = [r for r in ranked if known.get(r) == lowest]
            rest = [r for r in ranked if r not in least]
            return [least, *([r] for r in rest)]
    return [[r] for r in ranked]


class TextAffinityRouter(LocalityMixin, MultiplexMixin, RequestRouter):
    def initialize_state(
        self, imbalance_threshold: int = DEFAULT_IMBALANCE_THRESHOLD, **kwargs: Any
    ) -> None:
        self._imbalance_threshold = imbalance_threshold

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        key = None if pending_request is None else pending_request.kwargs.get("affinity")
        if not isinstance(key, str) or len(candidate_replicas) == 1:
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        queue_lens = await self._queue_lens(candidate_replicas)
        ranks = affinity_order(key, queue_lens, self._imbalance_threshold)
        return [[by_id[r] for r in rank] for rank in ranks]

    async def _queue_lens(self, replicas: list[RunningReplica]) -> dict[str, int | None]:
        """Each replica's requests in flight: from Ray Serve's cache, probed when missing."""
        lens: dict[str, int | None] = {}
        missing: list[RunningReplica] = []
        for replica in replicas:
            cached = self._replica_queue_len_cache.get(replica.replica_id)
            if cached is None:
                missing.append(replica)
            lens[replica.replica_id.unique_id] = cached
        if missing:
            for replica, queue_len in await self._probe_queue_lens(missing, 0):
                lens[replica.replica_id.unique_id] = queue_len
        return lens
