"""The command log port: a partitioned, append-only log with Kafka's semantics.

Every stage reads and writes through this port, so the same pipeline runs over the in-process
log (the embedded default) and over Apache Kafka. Offsets start at 0 and are contiguous per
partition; a record's timestamp is assigned by the log when it is appended (Kafka's
LogAppendTime), which makes it the clock of the matching path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol


class TopicPartition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int


class LogRecord(NamedTuple):
    """A record as read back from the log.

    A named tuple rather than a frozen dataclass: a stage builds one for every record it reads,
    and a frozen dataclass's `__init__` sets each field through `object.__setattr__` (440 ns a
    record against 160)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


class LogError(Exception):
    """The log refused an operation (unknown topic, partition out of range, closed client)."""


class RebalancedError(LogError):
    """A commit was refused because the group rebalanced: the partitions may be another's now.

    Nothing is lost: whoever holds the partitions next reads them from the last committed
    offset, and outputs written again are recognised downstream as duplicates.
    """


class RebalanceListener(Protocol):
    """Hears a group consumer's partitions change; called from within its `getmany`."""

    async def partitions_revoked(self, partitions: set[TopicPartition]) -> None:
        """These partitions are being taken away; commit what is done for them now."""

    async def partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        """These partitions are now this consumer's, each positioned at its committed offset."""


class LogProducer(ABC):
    """Appends records to explicit partitions; per partition, records keep the order sent."""

    @abstractmethod
    async def send(
        self, topic: str, partition: int, value: bytes, key: bytes | None = None
    ) -> None:
        """Queue a record; it is durable once `flush` returns."""

    @abstractmethod
    async def send_many(self, topic: str, partition: int, values: Sequence[bytes]) -> None:
        """Queue records for one partition, in this order, without keys; durable once `flush`
        returns."""

    @abstractmethod
    async def send_and_wait(
        self, topic: str, partition: int, value: bytes, key: bytes | None = None
    ) -> LogRecord:
        """Append one record and return it with its offset and log timestamp."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until every queued record is stored."""

    @abstractmethod
    async def close(self) -> None:
        """Flush and release the producer."""


class LogConsumer(ABC):
    """Reads assigned partitions from a position; a group id scopes committed offsets."""

    @abstractmethod
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions, each from its committed offset or else offset 0."""

    @abstractmethod
    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        """Share the partitions of `topics` with the other members of this consumer's group.

        Each partition is read by one member at a time. When members join or leave, every
        member's `getmany` first calls `listener.partitions_revoked` with what it held, and
        `listener.partitions_assigned` with what it holds next (positioned at the group's
        committed offsets, or 0), before it returns records of the new assignment.
        """

    @abstractmethod
    async def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""

    @abstractmethod
    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make `offset` the next record read from `partition`."""

    @abstractmethod
    async def getmany(self, timeout_ms: int = 100, max_records: int = 500) -> list[LogRecord]:
        """Return the next records of the assigned partitions, waiting up to `timeout_ms`."""

    @abstractmethod
    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record this consumer will read from `partition`."""

    @abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store, for this consumer's group, the next offset to read per partition."""

    @abstractmethod
    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed next offset for `partition`, or None if nothing is committed."""

    @abstractmethod
    async def end_offset(self, partition: TopicPartition) -> int:
        """The offset the next appended record will get (the high-water mark)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the consumer."""


class CommandLog(ABC):
    """A connection to one log: topics, producers and consumers."""

    @abstractmethod
    async def create_topic(self, topic: str, partitions: int) -> None:
        """Create `topic` with `partitions`; a topic that already has that many is left alone."""

    @abstractmethod
    async def partitions(self, topic: str) -> int:
        """How many partitions `topic` has; LogError if it does not exist."""

    @abstractmethod
    async def producer(self) -> LogProducer:
        """A started producer."""

    @abstractmethod
    async def consumer(self, group_id: str | None = None) -> LogConsumer:
        """A started consumer; `group_id` None means it cannot commit."""

    @abstractmethod
    async def close(self) -> None:
        """Release everything this log opened."""
