"""Per-client request budgets: a token bucket per API key (or per address for anonymous calls)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_TRACKED = 50_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows `rate` requests a second per client on average and bursts of up to `burst`.

    The clock is the process's monotonic clock: budgets are an edge concern of the API and
    never touch the matching path, whose only clock is the log's.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, client: str) -> float | None:
        """Take one request from `client`'s budget; None if allowed, else seconds to wait."""
        bucket = self._refilled(client)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.rate

    def spent(self, client: str) -> float | None:
        """Seconds until `client` has a request in its budget again; None if it has one now.
        Takes nothing."""
        bucket = self._buckets.get(client)
        if bucket is None:
            return None
        bucket = self._refilled(client)
        return None if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate

    def _refilled(self, client: str) -> _Bucket:
        """`client`'s bucket, topped up for the time since it was last used."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._forget_full(now)
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

    def _forget_full(self, now: float) -> None:
        """Drop clients whose bucket has refilled: they lose nothing by being forgotten."""
        refill = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < refill}


def retry_after_header(wait_s: float) -> str:
    """Whole seconds for a Retry-After header, never 0."""
    return str(max(1, math.ceil(wait_s)))
