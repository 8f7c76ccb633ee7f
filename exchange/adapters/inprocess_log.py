"""The embedded command log: Kafka's semantics inside one asyncio process, optionally on disk.

Records live in memory (one list per partition, the offset is the index). With a directory the
log is durable across restarts: each partition is an append-only file of frames

    [u32 body length][u32 crc32 of body][body: i64 timestamp ms, i32 key length (-1 = None), key,
    value]

and ``meta.json`` (replaced atomically) holds the topics and the committed offsets. Offsets are
implicit (the n-th frame is offset n). A frame that is incomplete or fails its checksum ends the
partition on open and is truncated away, as Kafka's log recovery does after a crash.

A record reaches the operating system before any consumer is handed it, before ``flush`` or
``send_and_wait`` return, and before a commit is stored, so a committed offset never points past
a stored record. ``fsync=True`` additionally forces the data to the disk on ``flush``,
``send_and_wait`` and commit (not when a consumer is handed a record).
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import os
import re
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from exchange.log import (
    CommandLog,
    LogConsumer,
    LogError,
    LogProducer,
    LogRecord,
    RebalanceListener,
    TopicPartition,
)

if sys.platform != "win32":
    import fcntl

__all__ = ["InProcessLog", "StoredOffsets", "stored_offsets", "stored_timestamp", "wall_clock_ms"]

_log = logging.getLogger(__name__)

# Kafka's rule for topic names; the name is also a directory name here.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_FRAME_HEAD = struct.Struct("<II")
_BODY_HEAD = struct.Struct("<qi")
_META = "meta.json"
_META_VERSION = 1
# Unwritten bytes of one partition are handed to the OS once they pass this size.
_WRITE_THRESHOLD = 1 << 20


def wall_clock_ms() -> int:
    """Milliseconds since the epoch from the system clock."""
    return time.time_ns() // 1_000_000


def _check_topic_name(topic: str) -> None:
    if not _TOPIC_NAME.fullmatch(topic) or topic in {".", ".."}:
        raise LogError(f"invalid topic name {topic!r}")


class _Partition:
    """One partition: its records in memory and, when durable, its file and unwritten frames."""

    __slots__ = ("file", "index", "last_ms", "pending", "records", "topic", "waiters")

    def __init__(self, topic: str, index: int) -> None:
        self.topic = topic
        self.index = index
        self.records: list[LogRecord] = []
        self.last_ms = 0
        self.file: BinaryIO | None = None
        self.pending = bytearray()
        self.waiters: set[asyncio.Event] = set()

    def append(self, timestamp_ms: int, key: bytes | None, value: bytes) -> LogRecord:
        # Kafka's LogAppendTime can step back with the wall clock; ours never does, so time
        # read from the log is monotonic per partition.
        if timestamp_ms < self.last_ms:
            timestamp_ms = self.last_ms
        self.last_ms = timestamp_ms
        record = LogRecord(self.topic, self.index, len(self.records), timestamp_ms, key, value)
        self.records.append(record)
        if self.file is not None:
            head = _BODY_HEAD.pack(timestamp_ms, -1 if key is None else len(key))
            crc = zlib.crc32(head)
            if key:
                crc = zlib.crc32(key, crc)
            crc = zlib.crc32(value, crc)
            pending = self.pending
            pending += _FRAME_HEAD.pack(len(head) + (len(key) if key else 0) + len(value), crc)
            pending += head
            if key:
                pending += key
            pending += value
            if len(pending) >= _WRITE_THRESHOLD:
                self.write_out()
        if self.waiters:
            for waiter in self.waiters:
                waiter.set()
            self.waiters.clear()
        return record

    def write_out(self) -> None:
        """Hand the unwritten frames to the operating system."""
        if self.pending and self.file is not None:
            view = memoryview(self.pending)
            while view:
                written = self.file.write(view)
                view = view[written:]
            view.release()
            self.pending.clear()

    def load(self, path: Path) -> None:
        """Read the frames of `path`, truncate a torn or corrupt tail, open it for appending."""
        data = path.read_bytes() if path.exists() else b""
        size = len(data)
        position = 0
        records = self.records
        while position + _FRAME_HEAD.size <= size:
            length, crc = _FRAME_HEAD.unpack_from(data, position)
            start = position + _FRAME_HEAD.size
            end = start + length
            if length < _BODY_HEAD.size or end > size:
                break
            if zlib.crc32(memoryview(data)[start:end]) != crc:
                break
            timestamp_ms, key_length = _BODY_HEAD.unpack_from(data, start)
            cursor = start + _BODY_HEAD.size
            if key_length < -1 or cursor + max(key_length, 0) > end:
                break
            key: bytes | None = None
            if key_length >= 0:
                key = data[cursor : cursor + key_length]
                cursor += key_length
            records.append(
                LogRecord(self.topic, self.index, len(records), timestamp_ms, key, data[cursor:end])
            )
            self.last_ms = max(self.last_ms, timestamp_ms)
            position = end
        if position != size:
            _log.warning(
                "%s: dropped %d bytes after offset %d (torn or corrupt frame)",
                path,
                size - position,
                len(records) - 1,
            )
            with path.open("r+b") as file:
                file.truncate(position)
                os.fsync(file.fileno())
        self.file = path.open("ab", buffering=0)


class StoredOffsets(NamedTuple):
    """What a log directory holds, read without opening the log."""

    ends: dict[TopicPartition, int]
    """Each partition's end offset: its whole frames on disk."""
    committed: dict[str, dict[TopicPartition, int]]
    """Each group's committed offsets."""


def stored_offsets(directory: Path) -> StoredOffsets:
    """The end and committed offsets of the log in `directory`, read from its files without
    taking its lock, so a running exchange can be inspected from another process (`cx
    status`). Frames its process has not yet handed to the OS are not counted; those no
    consumer has been given either."""
    meta_path = directory / _META
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    ends: dict[TopicPartition, int] = {}
    for topic, count in meta.get("topics", {}).items():
        for index in range(count):
            ends[TopicPartition(topic, index)] = _whole_frames(
                directory / "topics" / topic / f"{index}.log"
            )
    committed = {
        group: {
            TopicPartition(topic, int(partition)): offset
            for topic, partitions in topics.items()
            for partition, offset in partitions.items()
        }
        for group, topics in meta.get("offsets", {}).items()
    }
    return StoredOffsets(ends, committed)


def stored_timestamp(directory: Path, partition: TopicPartition, offset: int) -> int | None:
    """The log time (ms) of the record at `offset` of `partition` in the log in `directory`,
    read from its file without opening the log; None if the file does not hold it whole."""
    path = directory / "topics" / partition.topic / f"{partition.partition}.log"
    if not path.exists() or not path.stat().st_size:
        return None
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size = len(data)
        position, index = 0, 0
        while position + _FRAME_HEAD.size + _BODY_HEAD.size <= size:
            length, _ = _FRAME_HEAD.unpack_from(data, position)
            if position + _FRAME_HEAD.size + length > size:
                return None
            if index == offset:
                return int(_BODY_HEAD.unpack_from(data, position + _FRAME_HEAD.size)[0])
            position += _FRAME_HEAD.size + length
            index += 1
    return None


def _whole_frames(path: Path) -> int:
    """How many whole frames a partition file holds (their checksums are not checked)."""
    if not path.exists() or not path.stat().st_size:
        return 0
    count = 0
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size = len(data)
        position = 0
        while position + _FRAME_HEAD.size <= size:
            length, _ = _FRAME_HEAD.unpack_from(data, position)
            position += _FRAME_HEAD.size + length
            if position > size:
                break
            count += 1
    return count


class InProcessLog(CommandLog):
    """A command log inside this process; durable across restarts when given a directory."""

    def __init__(
        self,
        directory: Path | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        *,
        fsync: bool = False,
    ) -> None:
        self._directory = directory
        self._clock_ms = clock_ms
        self._fsync = fsync
        self._topics: dict[str, list[_Partition]] = {}
        self._committed: dict[str, dict[TopicPartition, int]] = {}
        self._clients: set[_InProcessProducer | _InProcessConsumer] = set()
        self._groups: dict[str, _Group] = {}
        self._meta_lock = asyncio.Lock()
        self._lock_file: BinaryIO | None = None
        self._closed = False
        if directory is not None:
            self._open(directory)

    def _open(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = (directory / ".lock").open("wb")
        if sys.platform != "win32":
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                self._lock_file.close()
                raise LogError(f"{directory} is in use by another InProcessLog") from exc
        meta_path = directory / _META
        meta: dict[str, Any] = {}
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            if meta.get("version") != _META_VERSION:
                raise LogError(f"{meta_path}: unsupported version {meta.get('version')!r}")
        for topic, count in meta.get("topics", {}).items():
            self._topics[topic] = self._open_partitions(topic, count)
        for group, topics in meta.get("offsets", {}).items():
            offsets = self._committed.setdefault(group, {})
            for topic, partitions in topics.items():
                for partition, offset in partitions.items():
                    tp = TopicPartition(topic, int(partition))
                    end = len(self._partition(tp).records)
                    if offset > end:
                        # Only an OS crash without fsync loses records a commit had seen.
                        _log.warning(
                            "group %s: committed offset %d of %s is past its end %d; using the end",
                            group,
                            offset,
                            tp,
                            end,
                        )
                        offset = end
                    offsets[tp] = offset

    def _open_partitions(self, topic: str, count: int) -> list[_Partition]:
        partitions = [_Partition(topic, index) for index in range(count)]
        if self._directory is not None:
            folder = self._directory / "topics" / topic
            folder.mkdir(parents=True, exist_ok=True)
            for partition in partitions:
                partition.load(folder / f"{partition.index}.log")
        return partitions

    def _meta_document(self) -> dict[str, Any]:
        offsets: dict[str, dict[str, dict[str, int]]] = {}
        for group, committed in self._committed.items():
            by_topic = offsets.setdefault(group, {})
            for tp, offset in committed.items():
                by_topic.setdefault(tp.topic, {})[str(tp.partition)] = offset
        return {
            "version": _META_VERSION,
            "topics": {topic: len(parts) for topic, parts in self._topics.items()},
            "offsets": offsets,
        }

    def _write_meta(self, directory: Path, document: dict[str, Any]) -> None:
        target = directory / _META
        temporary = directory / (_META + ".tmp")
        with temporary.open("w") as file:
            json.dump(document, file, separators=(",", ":"))
            if self._fsync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, target)
        if self._fsync:
            _fsync_directory(directory)

    async def _store_meta(self) -> None:
        directory = self._directory
        if directory is None:
            return
        async with self._meta_lock:
            document = self._meta_document()
            if self._fsync:
                await asyncio.to_thread(self._write_meta, directory, document)
            else:
                self._write_meta(directory, document)

    async def _store(self, partitions: Iterable[_Partition]) -> None:
        """Hand the partitions' frames to the OS (and to the disk with fsync)."""
        if self._directory is None:
            return
        files: list[BinaryIO] = []
        for partition in partitions:
            if partition.pending:
                partition.write_out()
                if partition.file is not None:
                    files.append(partition.file)
        if self._fsync and files:
            await asyncio.to_thread(_fsync_all, files)

    async def _store_all(self) -> None:
        await self._store(p for parts in self._topics.values() for p in parts)

    def _check_open(self) -> None:
        if self._closed:
            raise LogError("the log is closed")

    def _topic(self, topic: str) -> list[_Partition]:
        partitions = self._topics.get(topic)
        if partitions is None:
            raise LogError(f"unknown topic {topic!r}")
        return partitions

    def _partition(self, tp: TopicPartition) -> _Partition:
        partitions = self._topics.get(tp.topic)
        if partitions is None:
            raise LogError(f"unknown topic {tp.topic!r}")
        if not 0 <= tp.partition < len(partitions):
            raise LogError(f"{tp.topic!r} has no partition {tp.partition}")
        return partitions[tp.partition]

    def _append(self, topic: str, partition: int, value: bytes, key: bytes | None) -> LogRecord:
        if self._closed:
            raise LogError("the log is closed")
        partitions = self._topics.get(topic)
        if partitions is None:
            raise LogError(f"unknown topic {topic!r}")
        if not 0 <= partition < len(partitions):
            raise LogError(f"{topic!r} has no partition {partition}")
        if type(value) is not bytes or (key is not None and type(key) is not bytes):
            raise TypeError("key and value must be bytes")
        return partitions[partition].append(self._clock_ms(), key, value)

    async def create_topic(self, topic: str, partitions: int) -> None:
        """Create `topic` with `partitions`; a topic that already has that many is left alone."""
        self._check_open()
        _check_topic_name(topic)
        if partitions < 1:
            raise LogError(f"a topic needs at least one partition, not {partitions}")
        existing = self._topics.get(topic)
        if existing is not None:
            if len(existing) != partitions:
                raise LogError(
                    f"topic {topic!r} exists with {len(existing)} partitions, not {partitions}"
                )
            return
        self._topics[topic] = self._open_partitions(topic, partitions)
        await self._store_meta()

    async def partitions(self, topic: str) -> int:
        """How many partitions `topic` has; LogError if it does not exist."""
        self._check_open()
        existing = self._topics.get(topic)
        if existing is None:
            raise LogError(f"unknown topic {topic!r}")
        return len(existing)

    async def producer(self) -> LogProducer:
        """A started producer."""
        self._check_open()
        producer = _InProcessProducer(self)
        self._clients.add(producer)
        return producer

    async def consumer(self, group_id: str | None = None) -> LogConsumer:
        """A started consumer; `group_id` None means it cannot commit."""
        self._check_open()
        consumer = _InProcessConsumer(self, group_id)
        self._clients.add(consumer)
        return consumer

    async def close(self) -> None:
        """Close every producer and consumer, store everything, release the directory."""
        if self._closed:
            return
        for client in list(self._clients):
            await client.close()
        await self._store_all()
        self._closed = True
        for parts in self._topics.values():
            for partition in parts:
                if partition.file is not None:
                    partition.file.close()
                    partition.file = None
                # Wake readers still waiting so they see the log is closed.
                for waiter in partition.waiters:
                    waiter.set()
                partition.waiters.clear()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _fsync_all(files: list[BinaryIO]) -> None:
    for file in files:
        os.fsync(file.fileno())


def _fsync_directory(directory: Path) -> None:
    if sys.platform != "win32":
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class _InProcessProducer(LogProducer):
    """Appends straight into the log; `flush` makes the records durable."""

    def __init__(self, log: InProcessLog) -> None:
        self._log = log
        self._closed = False

    async def send(
        self, topic: str, partition: int, value: bytes, key: bytes | None = None
    ) -> None:
        """Queue a record; it is durable once `flush` returns."""
        if self._closed:
            raise LogError("the producer is closed")
        self._log._append(topic, partition, value, key)

    async def send_many(self, topic: str, partition: int, values: Sequence[bytes]) -> None:
        """Queue records for one partition, in this order; durable once `flush` returns."""
        if self._closed:
            raise LogError("the producer is closed")
        for value in values:
            self._log._append(topic, partition, value, None)

    async def send_and_wait(
        self, topic: str, partition: int, value: bytes, key: bytes | None = None
    ) -> LogRecord:
        """Append one record and return it with its offset and log timestamp."""
        if self._closed:
            raise LogError("the producer is closed")
        record = self._log._append(topic, partition, value, key)
        await self._log._store([self._log._topics[topic][partition]])
        return record

    async def flush(self) -> None:
        """Wait until every queued record is stored."""
        if self._closed:
            raise LogError("the producer is closed")
        await self._log._store_all()

    async def close(self) -> None:
        """Flush and release the producer."""
        if self._closed:
            return
        await self._log._store_all()
        self._closed = True
        self._log._clients.discard(self)


class _Group:
    """The subscribed members of one consumer group and their shared assignment.

    Rebalancing is eager, as in Kafka's classic protocol: when a member joins or leaves, a new
    generation starts; every member revokes all it holds, and only when all have done so are
    the partitions divided again (by ranges of each topic, members in order of joining), so no
    partition is ever read by two members at once.
    """

    def __init__(self) -> None:
        self.members: list[_InProcessConsumer] = []
        self.generation = 0
        self._ready: set[_InProcessConsumer] = set()
        self.assignments: dict[_InProcessConsumer, list[TopicPartition]] = {}
        self.settled = asyncio.Event()

    def join(self, member: _InProcessConsumer) -> None:
        self.members.append(member)
        self._next_generation()

    def leave(self, member: _InProcessConsumer) -> None:
        if member in self.members:
            self.members.remove(member)
            self._next_generation()

    def _next_generation(self) -> None:
        self.generation += 1
        for member in self.members:
            member.wake()
        self._ready = set()
        self.assignments = {}
        # Members waiting on the old generation wake up and see it is stale.
        self.settled.set()
        self.settled = asyncio.Event()

    def ready(self, member: _InProcessConsumer, counts: dict[str, int]) -> None:
        """`member` holds nothing now; divide the partitions once every member is ready."""
        self._ready.add(member)
        if not self._ready.issuperset(self.members):
            return
        assignments: dict[_InProcessConsumer, list[TopicPartition]] = {m: [] for m in self.members}
        for topic, count in sorted(counts.items()):
            readers = [m for m in self.members if topic in m.subscribed_topics]
            for index, reader in enumerate(readers):
                first = index * count // len(readers)
                last = (index + 1) * count // len(readers)
                assignments[reader].extend(TopicPartition(topic, p) for p in range(first, last))
        self.assignments = assignments
        self.settled.set()


class _InProcessConsumer(LogConsumer):
    """Reads assigned partitions straight from the log's memory."""

    def __init__(self, log: InProcessLog, group_id: str | None) -> None:
        self._log = log
        self._group_id = group_id
        self._assigned: list[tuple[TopicPartition, _Partition]] = []
        self._positions: dict[TopicPartition, int] = {}
        self._first = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self.subscribed_topics: tuple[str, ...] = ()
        self._listener: RebalanceListener | None = None
        self._generation = 0

    def _check_open(self) -> None:
        if self._closed:
            raise LogError("the consumer is closed")
        self._log._check_open()

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        """Share the partitions of `topics` with the other members of this consumer's group."""
        self._check_open()
        if self._group_id is None:
            raise LogError("a consumer without a group id cannot subscribe")
        if self._listener is not None or self._assigned:
            raise LogError("this consumer already reads partitions; use a new consumer")
        for topic in topics:
            self._log._topic(topic)
        self.subscribed_topics = tuple(dict.fromkeys(topics))
        self._listener = listener
        self._log._groups.setdefault(self._group_id, _Group()).join(self)

    def wake(self) -> None:
        """End a wait in `getmany` early (the group is rebalancing)."""
        self._wakeup.set()

    async def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""
        self._check_open()
        return {tp for tp, _ in self._assigned}

    async def _synchronise(self, deadline: float) -> bool:
        """Take part in a pending rebalance; True when this consumer's assignment is current."""
        # Only a subscribed consumer has a listener, and only one with a group id subscribes.
        listener, group_id = self._listener, self._group_id
        if listener is None or group_id is None:
            return True
        group = self._log._groups[group_id]
        loop = asyncio.get_running_loop()
        while self._generation != group.generation:
            generation = group.generation
            if self._assigned:
                # As in Kafka, the partitions are still this member's while the listener runs,
                # so it can commit what it processed.
                await listener.partitions_revoked({tp for tp, _ in self._assigned})
                self._assigned, self._positions = [], {}
                continue
            if generation != group.generation:
                continue
            settled = group.settled
            group.ready(self, {t: len(self._log._topic(t)) for t in self.subscribed_topics})
            if not settled.is_set():
                try:
                    async with asyncio.timeout_at(deadline):
                        await settled.wait()
                except TimeoutError:
                    return False
            if generation != group.generation or self not in group.assignments:
                if loop.time() >= deadline:
                    return False
                continue
            self._take(group.assignments[self])
            self._generation = generation
            await listener.partitions_assigned({tp for tp, _ in self._assigned})
        return True

    def _take(self, partitions: Iterable[TopicPartition]) -> None:
        requested = list(dict.fromkeys(TopicPartition(*tp) for tp in partitions))
        resolved = [(tp, self._log._partition(tp)) for tp in requested]
        committed: dict[TopicPartition, int] = {}
        if self._group_id is not None:
            committed = self._log._committed.get(self._group_id, {})
        self._assigned = resolved
        self._positions = {tp: committed.get(tp, 0) for tp, _ in resolved}
        self._first = 0

    def _position_of(self, partition: TopicPartition) -> int:
        position = self._positions.get(partition)
        if position is None:
            raise LogError(f"{partition} is not assigned to this consumer")
        return position

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions, each from its committed offset or else offset 0."""
        self._check_open()
        if self._listener is not None:
            raise LogError("this consumer is subscribed; its group assigns its partitions")
        self._take(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make `offset` the next record read from `partition`."""
        self._check_open()
        self._position_of(partition)
        end = len(self._log._partition(partition).records)
        if not 0 <= offset <= end:
            raise LogError(f"offset {offset} is outside {partition}'s range 0..{end}")
        self._positions[partition] = offset

    def _collect(self, max_records: int) -> list[LogRecord]:
        assigned = self._assigned
        count = len(assigned)
        batch: list[LogRecord] = []
        budget = max_records
        positions = self._positions
        for step in range(count):
            tp, partition = assigned[(self._first + step) % count]
            position = positions[tp]
            records = partition.records
            if position < len(records):
                if partition.pending:
                    partition.write_out()
                chunk = records[position : position + budget]
                batch.extend(chunk)
                positions[tp] = position + len(chunk)
                budget -= len(chunk)
                if budget == 0:
                    break
        if count:
            # Start from the next partition next time so a busy one cannot starve the rest.
            self._first = (self._first + 1) % count
        return batch

    async def getmany(self, timeout_ms: int = 100, max_records: int = 500) -> list[LogRecord]:
        """Return the next records of the assigned partitions, waiting up to `timeout_ms`."""
        self._check_open()
        if max_records < 1 or timeout_ms < 0:
            raise ValueError("max_records must be positive and timeout_ms not negative")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        if not await self._synchronise(deadline):
            return []
        batch = self._collect(max_records)
        if batch or timeout_ms == 0:
            return batch
        wakeup = self._wakeup
        while True:
            wakeup.clear()
            for _, partition in self._assigned:
                partition.waiters.add(wakeup)
            try:
                async with asyncio.timeout_at(deadline):
                    await wakeup.wait()
            except TimeoutError:
                return []
            finally:
                for _, partition in self._assigned:
                    partition.waiters.discard(wakeup)
            self._check_open()
            if self._rebalancing():
                return []
            batch = self._collect(max_records)
            if batch:
                return batch

    def _rebalancing(self) -> bool:
        if self._group_id is None or self._listener is None:
            return False
        return self._generation != self._log._groups[self._group_id].generation

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record this consumer will read from `partition`."""
        self._check_open()
        return self._position_of(partition)

    def _group(self) -> str:
        if self._group_id is None:
            raise LogError("a consumer without a group id cannot commit")
        return self._group_id

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store, for this consumer's group, the next offset to read per partition."""
        self._check_open()
        group = self._group()
        for tp, offset in offsets.items():
            self._position_of(tp)
            end = len(self._log._partition(tp).records)
            if not 0 <= offset <= end:
                raise LogError(f"cannot commit offset {offset} of {tp}: its range is 0..{end}")
        # The records behind a committed offset are stored before the offset is.
        await self._log._store_all()
        self._log._committed.setdefault(group, {}).update(
            {TopicPartition(*tp): offset for tp, offset in offsets.items()}
        )
        await self._log._store_meta()

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed next offset for `partition`, or None if nothing is committed."""
        self._check_open()
        group = self._group()
        self._log._partition(partition)
        return self._log._committed.get(group, {}).get(partition)

    async def end_offset(self, partition: TopicPartition) -> int:
        """The offset the next appended record will get (the high-water mark)."""
        self._check_open()
        return len(self._log._partition(partition).records)

    async def close(self) -> None:
        """Release the consumer."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        self._log._clients.discard(self)
        if self._listener is not None and self._group_id is not None:
            self._log._groups[self._group_id].leave(self)
