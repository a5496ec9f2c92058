"""The server process's own BLAS threads (numpy's OpenBLAS): the embedding heads' and label
prototypes' matrix products of each window.

Those products are small (a window's texts against a few hundred label rows), and on a CPU
host the cores belong to the engines, whose OpenMP threads are bound to them. With one BLAS
thread per core the server's products split across both cores and their threads wait for each
other and for the engines; with one, a product runs on the core the event loop is on. Measured
on the mixed short workload (2 cores, two servers in alternating phases, 6 rounds each): the
server process's CPU per text 1.10 ms with one thread against 1.52 ms with the default two,
lower in every round, and 1.09x the throughput.
"""

from __future__ import annotations

import logging

from threadpoolctl import threadpool_info, threadpool_limits

log = logging.getLogger(__name__)


def limit_blas_threads(threads: int | None) -> None:
    """Caps this process's BLAS libraries at `threads` threads (None: their default). Engines
    run in processes of their own and are not affected."""
    if threads is None:
        return
    threadpool_limits(limits=threads, user_api="blas")
    found = sorted({str(pool.get("num_threads")) for pool in blas_pools()})
    log.info("server process BLAS threads: %s", ", ".join(found) or "no BLAS library loaded")


def blas_pools() -> list[dict[str, object]]:
    """The BLAS thread pools loaded in this process (threadpoolctl's description of each)."""
    return [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
