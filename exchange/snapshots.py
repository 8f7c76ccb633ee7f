"""The snapshot port: the stages' state per input partition, saved and found again.

A snapshot holds a partition's whole state after the records before `input_offset`, and its
state hash. A stage that takes a partition over restores the latest snapshot and replays only
the tail of the log after it. `settlement.snapshots` keeps them in the event store's database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One partition's state after the records before `input_offset`."""

    stage: str
    topic: str
    partition: int
    input_offset: int
    state_hash: str
    data: Any


class SnapshotStoreUnavailable(Exception):
    """The store could not save now: its database is away, or failing over to a standby.

    A snapshot only shortens the replay of a partition taken over later, so a stage goes on
    without it and saves at its next commit."""


class SnapshotStore(ABC):
    """Saves and finds snapshots; keeps the latest few per partition."""

    @abstractmethod
    async def save(self, snapshot: Snapshot) -> None:
        """Store a snapshot (a second one at the same offset is the same state: kept once);
        SnapshotStoreUnavailable if the store cannot be reached."""

    @abstractmethod
    async def latest(
        self, stage: str, topic: str, partition: int, at_most: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot of a partition, not past `at_most` if given."""
