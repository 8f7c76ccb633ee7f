"""The garbage collector tuned for a process of its own that builds a large, long-lived heap: a
node serving stages, or a replay rebuilding the exchange's state."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Allocations between young collections (Python's default is 700): see `quiet_collector`."""


def quiet_collector() -> None:
    """Keep full collections short and rare: the start-up heap (modules, pydantic and FastAPI
    schemas, the catalogue) is frozen out of the collector's way, and young collections run
    every YOUNG_THRESHOLD allocations. Full collections still run, so cyclic garbage is still
    freed. Before this a full collection of the API node took 70-110 ms and set the fan-out
    p99, and a replay spent about a fifth of its time collecting, mostly the driver's records
    and the decoded events, which hold no cycles (docs/BENCHMARKS.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)
