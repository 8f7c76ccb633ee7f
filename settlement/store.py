"""The event store port: one append-only table of events, read by stream or globally.

Modelled on Message DB and eventsourcing's recorders. Appends are atomic per batch, carry the
consumed log offsets in the same transaction (so a consumer resumes exactly where its last
committed batch ended), and a retried append of an event id already stored is a no-op.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append. `event_id` is globally unique and chosen by the writer."""

    event_id: str
    stream_id: str
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_version: int = 1
    data_json: str | None = None
    """`data` as the JSON text it was read from, when the writer has it: a store that keeps
    JSON text stores this instead of serialising `data` again."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored: with its global position and its version within its stream."""

    position: int
    stream_id: str
    stream_version: int
    event_id: str
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime


CompactEvent = tuple[int, str, int, str | None, int | None]
"""A stored event as a replay reads it: (position, type, ts, JSON text or None, the
events-topic partition it was read from or None)."""


class ConcurrencyError(Exception):
    """A stream was not at the version the writer expected."""


class Projector(Protocol):
    """Updates read models inside the append transaction, so they never drift from the events."""

    async def __call__(self, connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        """Apply newly stored events to the read models."""


class CompactReader(Protocol):
    """What a replay reads: the store, or one consistent view of it."""

    async def read_compact(
        self, after_position: int, limit: int, with_data: Collection[str]
    ) -> list[CompactEvent]:
        """Events after a position, compactly (see `EventStore.read_compact`)."""


OffsetKey = tuple[str, str, int]
"""(consumer name, topic, partition)."""


class EventStore(ABC):
    """Append events atomically with consumer offsets; read a stream or everything in order."""

    @abstractmethod
    async def append(
        self,
        events: Sequence[NewEvent],
        *,
        expected_versions: Mapping[str, int] | None = None,
        offsets: Mapping[OffsetKey, int] | None = None,
        projector: Projector | None = None,
    ) -> list[StoredEvent]:
        """Append in one transaction and return the events newly stored.

        Events whose id is already stored are dropped (a retried append is a no-op).
        `expected_versions` maps a stream to the version it must have now (0: must not exist);
        a mismatch raises ConcurrencyError and stores nothing. `offsets` maps
        (consumer, topic, partition) to the next offset to read and is stored in the same
        transaction, as are the projector's writes.
        """

    @abstractmethod
    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[StoredEvent]:
        """Events of one stream from `from_version` on, in version order."""

    @abstractmethod
    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Up to `limit` events with position greater than `after_position`, in global order.

        Never skips an event that commits later with a lower position: a reader tailing with
        its last seen position sees every event exactly once.
        """

    async def read_compact(
        self, after_position: int, limit: int, with_data: Collection[str]
    ) -> list[CompactEvent]:
        """Like `read_all`, but each event as (position, type, ts, data, partition): its JSON
        text for the types in `with_data`, else None (a replay needs only the log time of the
        rest), and the events-topic partition it was read from (its metadata's)."""
        return [
            (
                stored.position,
                stored.type,
                stored.data["ts"],
                orjson.dumps(stored.data).decode() if stored.type in with_data else None,
                stored.metadata.get("partition"),
            )
            for stored in await self.read_all(after_position, limit)
        ]

    @abstractmethod
    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version, 0 if it has no events."""

    @abstractmethod
    async def consumer_offsets(self, consumer: str) -> dict[tuple[str, int], int]:
        """The stored next offset per (topic, partition) for `consumer`."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
