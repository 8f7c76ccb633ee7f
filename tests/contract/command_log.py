"""The command log contract: every adapter of `exchange.log.CommandLog` passes these tests.

Subclass `CommandLogContract` and provide the `log_factory` fixture: a coroutine function that
opens a new connection to the same log each time it is called (for a durable log, the same
storage, so closing one and opening the next is a restart).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar

import pytest

from exchange.log import CommandLog, LogConsumer, LogError, LogRecord, TopicPartition

LogFactory = Callable[[], Awaitable[CommandLog]]

# Generous for a real broker on a loaded machine; the in-process log answers at once.
READ_TIMEOUT_S = 20.0


async def read_exactly(consumer: LogConsumer, count: int) -> list[LogRecord]:
    """Read `count` records, never more, failing if they do not arrive in time."""
    records: list[LogRecord] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    while len(records) < count and time.monotonic() < deadline:
        records += await consumer.getmany(timeout_ms=500, max_records=count - len(records))
    assert len(records) == count, f"read {len(records)} of {count} records"
    return records


def by_partition(records: list[LogRecord]) -> dict[int, list[LogRecord]]:
    """Group records by partition, keeping their order."""
    grouped: dict[int, list[LogRecord]] = {}
    for record in records:
        grouped.setdefault(record.partition, []).append(record)
    return grouped


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


class CommandLogContract(ABC):
    """Tests every command log adapter must pass."""

    # False for a log that lives only as long as its instance: "restart" then means only a new
    # consumer on the same log.
    log_survives_restart: ClassVar[bool] = True

    @pytest.fixture
    @abstractmethod
    def log_factory(self) -> LogFactory:
        """A coroutine function opening a new connection to the same log."""

    @pytest.fixture
    async def open_log(self, log_factory: LogFactory) -> AsyncIterator[LogFactory]:
        """Open logs through the factory and close every one of them after the test."""
        opened: list[CommandLog] = []

        async def open_() -> CommandLog:
            log = await log_factory()
            opened.append(log)
            return log

        yield open_
        for log in reversed(opened):
            await log.close()

    @pytest.fixture
    async def log(self, open_log: LogFactory) -> CommandLog:
        """One open log."""
        return await open_log()

    @pytest.fixture
    def topic(self) -> str:
        """A topic name no other test uses."""
        return f"contract-{uuid.uuid4().hex}"

    async def test_create_topic_is_idempotent_and_partitions_reports_the_count(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 3)
        await log.create_topic(topic, 3)

        assert await log.partitions(topic) == 3

    async def test_create_topic_with_another_partition_count_raises(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 2)

        with pytest.raises(LogError):
            await log.create_topic(topic, 3)
        assert await log.partitions(topic) == 2

    async def test_create_topic_without_partitions_raises(
        self, log: CommandLog, topic: str
    ) -> None:
        with pytest.raises(LogError):
            await log.create_topic(topic, 0)

    async def test_partitions_of_an_unknown_topic_raises(self, log: CommandLog, topic: str) -> None:
        with pytest.raises(LogError):
            await log.partitions(topic)

    async def test_topic_is_visible_to_another_connection(
        self, open_log: LogFactory, topic: str
    ) -> None:
        first = await open_log()
        await first.create_topic(topic, 4)
        producer = await first.producer()
        await producer.send_and_wait(topic, 3, b"v")

        if self.log_survives_restart:
            await first.close()
            second = await open_log()
        else:
            second = first

        assert await second.partitions(topic) == 4

    async def test_offsets_start_at_zero_and_are_contiguous_per_partition(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 2)
        producer = await log.producer()

        written = [await producer.send_and_wait(topic, i % 2, b"%d" % i) for i in range(10)]

        assert [r.offset for r in written if r.partition == 0] == [0, 1, 2, 3, 4]
        assert [r.offset for r in written if r.partition == 1] == [0, 1, 2, 3, 4]
        assert all(r.topic == topic for r in written)

    async def test_send_and_wait_returns_the_record_as_stored(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 1)
        producer = await log.producer()
        written = [await producer.send_and_wait(topic, 0, b"v%d" % i, b"k") for i in range(3)]
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0)])

        assert await read_exactly(consumer, 3) == written

    async def test_many_records_sent_without_waiting_keep_their_order_per_partition(
        self, log: CommandLog, topic: str
    ) -> None:
        partitions, count = 4, 1000
        await log.create_topic(topic, partitions)
        producer = await log.producer()
        for i in range(count):
            await producer.send(topic, i % partitions, b"%d" % i)
        await producer.flush()
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])

        grouped = by_partition(await read_exactly(consumer, count))

        assert sorted(grouped) == list(range(partitions))
        for partition, records in grouped.items():
            assert [r.offset for r in records] == list(range(count // partitions))
            assert [r.value for r in records] == [
                b"%d" % i for i in range(partition, count, partitions)
            ]

    async def test_records_sent_many_at_a_time_keep_their_order_per_partition(
        self, log: CommandLog, topic: str
    ) -> None:
        partitions, count = 3, 3000
        await log.create_topic(topic, partitions)
        producer = await log.producer()
        values = [b"%d-" % i + b"x" * 100 for i in range(count)]
        for partition in range(partitions):
            await producer.send_many(topic, partition, values[partition::partitions])
        await producer.send(topic, 0, b"after")
        await producer.flush()
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])

        grouped = by_partition(await read_exactly(consumer, count + 1))

        assert [r.value for r in grouped[0]] == [*values[0::partitions], b"after"]
        for partition in (1, 2):
            assert [r.value for r in grouped[partition]] == values[partition::partitions]
            assert [r.offset for r in grouped[partition]] == list(range(count // partitions))

    async def test_concurrent_producers_interleave_but_each_keeps_its_order(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 1)
        producers = [await log.producer() for _ in range(2)]

        async def write(index: int) -> None:
            for i in range(200):
                await producers[index].send(topic, 0, b"%d" % i, b"%d" % index)
                if i % 10 == 0:
                    await asyncio.sleep(0)
            await producers[index].flush()

        await asyncio.gather(write(0), write(1))
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0)])
        records = await read_exactly(consumer, 400)

        assert [r.offset for r in records] == list(range(400))
        for index in (0, 1):
            mine = [r.value for r in records if r.key == b"%d" % index]
            assert mine == [b"%d" % i for i in range(200)]

    async def test_partitions_are_independent(self, log: CommandLog, topic: str) -> None:
        await log.create_topic(topic, 3)
        producer = await log.producer()
        for i in range(5):
            await producer.send(topic, 0, b"a%d" % i)
        for i in range(2):
            await producer.send(topic, 2, b"c%d" % i)
        await producer.flush()
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 1)])

        assert await consumer.getmany(timeout_ms=300) == []
        consumer.assign([TopicPartition(topic, 2)])
        records = await read_exactly(consumer, 2)
        assert [(r.partition, r.offset, r.value) for r in records] == [(2, 0, b"c0"), (2, 1, b"c1")]
        ends = [await consumer.end_offset(TopicPartition(topic, p)) for p in range(3)]
        assert ends == [5, 0, 2]

    async def test_key_and_value_bytes_round_trip_exactly(
        self, log: CommandLog, topic: str
    ) -> None:
        cases: list[tuple[bytes | None, bytes]] = [
            (None, b""),
            (b"", b"v"),
            (b"k", b""),
            (None, bytes(range(256))),
            (bytes(range(256)), b"\x00" * 10),
            (b"\xff\xfe", "kibibyte \u00e9\u4e2d".encode()),
            (b"big", b"\x01\x02" * 50_000),
        ]
        await log.create_topic(topic, 1)
        producer = await log.producer()
        for key, value in cases:
            await producer.send(topic, 0, value, key)
        await producer.flush()
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0)])

        records = await read_exactly(consumer, len(cases))

        assert [(r.key, r.value) for r in records] == cases
        assert all(type(r.value) is bytes for r in records)

    async def test_timestamps_come_from_the_log_and_never_decrease_per_partition(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 2)
        producer = await log.producer()
        before = now_ms()
        for i in range(200):
            await producer.send(topic, i % 2, b"%d" % i)
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        await producer.flush()
        after = now_ms()
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])

        grouped = by_partition(await read_exactly(consumer, 200))

        for records in grouped.values():
            stamps = [r.timestamp_ms for r in records]
            assert stamps == sorted(stamps)
            assert stamps[0] >= before - 5_000
            assert stamps[-1] <= after + 5_000

    async def test_consumer_reads_from_zero_and_seek_moves_its_position(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 1)
        producer = await log.producer()
        for i in range(10):
            await producer.send(topic, 0, b"%d" % i)
        await producer.flush()
        tp = TopicPartition(topic, 0)
        consumer = await log.consumer()
        consumer.assign([tp])

        assert await consumer.position(tp) == 0
        assert [r.offset for r in await read_exactly(consumer, 4)] == [0, 1, 2, 3]
        assert await consumer.position(tp) == 4
        consumer.seek(tp, 8)
        assert await consumer.position(tp) == 8
        assert [r.value for r in await read_exactly(consumer, 2)] == [b"8", b"9"]
        assert await consumer.position(tp) == 10
        consumer.seek(tp, 1)
        assert [r.offset for r in await read_exactly(consumer, 9)] == list(range(1, 10))
        assert await consumer.getmany(timeout_ms=200) == []

    async def test_seek_right_after_assign_sets_where_reading_starts(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 2)
        producer = await log.producer()
        for i in range(10):
            await producer.send(topic, i % 2, b"%d" % i)
        await producer.flush()
        tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer = await log.consumer("group")
        consumer.assign([tp0, tp1])
        # The event store's sink pattern: assign, then seek to the offsets it stored itself.
        consumer.seek(tp0, 3)
        consumer.seek(tp1, 5)

        assert await consumer.position(tp0) == 3
        assert await consumer.position(tp1) == 5
        records = await read_exactly(consumer, 2)
        assert [(r.partition, r.offset, r.value) for r in records] == [(0, 3, b"6"), (0, 4, b"8")]
        assert await consumer.getmany(timeout_ms=200) == []

    async def test_getmany_without_an_assignment_returns_empty(self, log: CommandLog) -> None:
        consumer = await log.consumer()

        assert await consumer.getmany(timeout_ms=100) == []
        consumer.assign([])
        assert await consumer.getmany(timeout_ms=100) == []

    async def test_getmany_returns_at_most_max_records(self, log: CommandLog, topic: str) -> None:
        await log.create_topic(topic, 2)
        producer = await log.producer()
        for i in range(20):
            await producer.send(topic, i % 2, b"%d" % i)
        await producer.flush()
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])

        seen: list[LogRecord] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(seen) < 20 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=3)
            assert len(batch) <= 3
            seen += batch

        assert sorted((r.partition, r.offset) for r in seen) == [
            (p, o) for p in range(2) for o in range(10)
        ]

    async def test_getmany_without_data_returns_empty_after_the_timeout(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 1)
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.position(TopicPartition(topic, 0))

        started = time.monotonic()
        assert await consumer.getmany(timeout_ms=400) == []
        elapsed = time.monotonic() - started

        assert 0.3 <= elapsed < 5.0

    async def test_getmany_wakes_up_when_a_record_arrives(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 2)
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        await consumer.position(TopicPartition(topic, 1))
        producer = await log.producer()

        started = time.monotonic()
        reading = asyncio.create_task(consumer.getmany(timeout_ms=15_000))
        await asyncio.sleep(0.2)
        await producer.send_and_wait(topic, 1, b"wake")
        records = await reading

        assert [(r.partition, r.value) for r in records] == [(1, b"wake")]
        assert time.monotonic() - started < 10.0

    async def test_end_offset_is_the_next_offset_to_be_written(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 2)
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        producer = await log.producer()

        assert await consumer.end_offset(TopicPartition(topic, 0)) == 0
        for _ in range(3):
            await producer.send(topic, 0, b"x")
        await producer.flush()

        assert await consumer.end_offset(TopicPartition(topic, 0)) == 3
        assert await consumer.end_offset(TopicPartition(topic, 1)) == 0

    async def test_commit_and_committed_are_per_group(self, log: CommandLog, topic: str) -> None:
        await log.create_topic(topic, 2)
        tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        producer = await log.producer()
        for i in range(10):
            await producer.send(topic, 0, b"%d" % i)
        await producer.flush()
        consumer = await log.consumer("group-a")
        consumer.assign([tp0, tp1])
        other = await log.consumer("group-b")

        await read_exactly(consumer, 4)
        await consumer.commit({tp0: 4})

        assert await consumer.committed(tp0) == 4
        assert await consumer.committed(tp1) is None
        assert await other.committed(tp0) is None
        await consumer.commit({tp0: 7})
        assert await consumer.committed(tp0) == 7

    async def test_a_consumer_without_group_cannot_commit(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 1)
        tp = TopicPartition(topic, 0)
        consumer = await log.consumer()
        consumer.assign([tp])

        with pytest.raises(LogError):
            await consumer.commit({tp: 0})
        with pytest.raises(LogError):
            await consumer.committed(tp)

    async def test_commit_of_an_unassigned_partition_raises(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 2)
        consumer = await log.consumer("group")
        consumer.assign([TopicPartition(topic, 0)])

        with pytest.raises(LogError):
            await consumer.commit({TopicPartition(topic, 1): 0})

    async def test_a_new_consumer_resumes_from_the_committed_offset_after_a_restart(
        self, open_log: LogFactory, topic: str
    ) -> None:
        tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        log = await open_log()
        await log.create_topic(topic, 2)
        producer = await log.producer()
        for i in range(10):
            await producer.send(topic, 0, b"a%d" % i)
        for i in range(4):
            await producer.send(topic, 1, b"b%d" % i)
        await producer.flush()
        first = await log.consumer("group")
        first.assign([tp0, tp1])
        read = await read_exactly(first, 14)
        assert len(read) == 14
        await first.commit({tp0: 6, tp1: 2})
        await first.close()

        if self.log_survives_restart:
            await log.close()
            log = await open_log()
        second = await log.consumer("group")
        second.assign([tp0, tp1])

        assert await second.position(tp0) == 6
        assert await second.position(tp1) == 2
        resumed = by_partition(await read_exactly(second, 6))
        assert [r.value for r in resumed[0]] == [b"a6", b"a7", b"a8", b"a9"]
        assert [r.value for r in resumed[1]] == [b"b2", b"b3"]
        stranger = await log.consumer("another-group")
        stranger.assign([tp0])
        assert await stranger.position(tp0) == 0

    async def test_reassigning_restarts_from_the_committed_offsets(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 1)
        tp = TopicPartition(topic, 0)
        producer = await log.producer()
        for i in range(5):
            await producer.send(topic, 0, b"%d" % i)
        await producer.flush()
        consumer = await log.consumer("group")
        consumer.assign([tp])
        await read_exactly(consumer, 5)
        await consumer.commit({tp: 2})

        consumer.assign([tp])

        assert await consumer.position(tp) == 2

    async def test_sending_to_an_unknown_topic_or_partition_raises(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 2)
        producer = await log.producer()

        with pytest.raises(LogError):
            await producer.send(f"{topic}-missing", 0, b"x")
        with pytest.raises(LogError):
            await producer.send(topic, 2, b"x")
        with pytest.raises(LogError):
            await producer.send_and_wait(topic, -1, b"x")
        with pytest.raises(LogError):
            await log.partitions(f"{topic}-missing")

    async def test_reading_an_unknown_partition_raises(self, log: CommandLog, topic: str) -> None:
        await log.create_topic(topic, 2)
        consumer = await log.consumer()

        async def assign_and_read(tp: TopicPartition) -> None:
            # An adapter may check at assign or, at the latest, on the next read.
            consumer.assign([tp])
            await consumer.getmany(timeout_ms=0)

        with pytest.raises(LogError):
            await assign_and_read(TopicPartition(topic, 2))
        with pytest.raises(LogError):
            await assign_and_read(TopicPartition(f"{topic}-missing", 0))

    async def test_position_of_an_unassigned_partition_raises(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 2)
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0)])

        with pytest.raises(LogError):
            await consumer.position(TopicPartition(topic, 1))

    async def test_closed_clients_refuse_work_and_close_is_idempotent(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 1)
        producer = await log.producer()
        consumer = await log.consumer()
        consumer.assign([TopicPartition(topic, 0)])
        await producer.send(topic, 0, b"x")

        await producer.close()
        await producer.close()
        await consumer.close()
        await consumer.close()

        with pytest.raises(LogError):
            await producer.send(topic, 0, b"y")
        with pytest.raises(LogError):
            await consumer.getmany(timeout_ms=0)
        await log.close()
        await log.close()
        with pytest.raises(LogError):
            await log.partitions(topic)


class Recorder:
    """A rebalance listener that remembers what it was told and what it holds."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.held: set[TopicPartition] = set()

    async def partitions_revoked(self, partitions: set[TopicPartition]) -> None:
        self.calls.append(("revoked", sorted(tp.partition for tp in partitions)))
        self.held -= partitions

    async def partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        self.calls.append(("assigned", sorted(tp.partition for tp in partitions)))
        self.held |= partitions


async def poll_until(
    consumers: list[LogConsumer], done: Callable[[list[LogRecord]], bool]
) -> list[LogRecord]:
    """Poll every consumer concurrently (as group members must) until `done(records read)`."""
    records: list[LogRecord] = []
    deadline = time.monotonic() + READ_TIMEOUT_S * 2
    while not done(records):
        assert time.monotonic() < deadline, f"gave up after reading {len(records)} records"
        batches = await asyncio.gather(*(c.getmany(timeout_ms=200) for c in consumers))
        for batch in batches:
            records += batch
    return records


class GroupContract:
    """Consumer groups: subscribed members share a topic's partitions."""

    async def test_a_lone_member_gets_every_partition_from_the_committed_offsets(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 3)
        producer = await log.producer()
        for partition in range(3):
            for n in range(4):
                await producer.send(topic, partition, f"{partition}-{n}".encode())
        await producer.flush()
        group = f"g-{uuid.uuid4().hex}"
        first = await log.consumer(group_id=group)
        first.assign([TopicPartition(topic, 1)])
        await read_exactly(first, 4)
        await first.commit({TopicPartition(topic, 1): 3})
        await first.close()

        member = await log.consumer(group_id=group)
        recorder = Recorder()
        member.subscribe([topic], recorder)
        records = await poll_until([member], lambda r: len(r) >= 9)

        assert recorder.calls == [("assigned", [0, 1, 2])]
        assert await member.assignment() == {TopicPartition(topic, p) for p in range(3)}
        assert sorted(r.value for r in records) == sorted(
            [f"{p}-{n}".encode() for p in (0, 2) for n in range(4)] + [b"1-3"]
        )
        await member.close()

    async def test_members_split_the_partitions_and_a_survivor_takes_them_all(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 4)
        group = f"g-{uuid.uuid4().hex}"
        first, second = await log.consumer(group_id=group), await log.consumer(group_id=group)
        first_recorder, second_recorder = Recorder(), Recorder()
        first.subscribe([topic], first_recorder)
        second.subscribe([topic], second_recorder)

        def split(_: list[LogRecord]) -> bool:
            held = [first_recorder.held, second_recorder.held]
            return all(held) and (held[0] | held[1]) == {TopicPartition(topic, p) for p in range(4)}

        await poll_until([first, second], split)
        assert not first_recorder.held & second_recorder.held
        assert len(first_recorder.held) == len(second_recorder.held) == 2

        producer = await log.producer()
        for partition in range(4):
            await producer.send(topic, partition, f"{partition}".encode())
        await producer.flush()
        read = await poll_until([first, second], lambda r: len(r) >= 4)
        assert sorted(r.value for r in read) == [b"0", b"1", b"2", b"3"]
        for record in read:
            await (
                first if TopicPartition(topic, record.partition) in first_recorder.held else second
            ).commit({TopicPartition(topic, record.partition): record.offset + 1})

        await second.close()
        await poll_until([first], lambda _: len(first_recorder.held) == 4)
        assert first_recorder.calls[-1] == ("assigned", [0, 1, 2, 3])
        assert first_recorder.calls[-2][0] == "revoked"
        for partition in range(4):
            await producer.send(topic, partition, f"{partition}-again".encode())
        await producer.flush()
        again = await poll_until([first], lambda r: len(r) >= 4)
        assert sorted(r.value for r in again) == [f"{p}-again".encode() for p in range(4)]
        await first.close()

    async def test_each_group_gets_every_partition(self, log: CommandLog, topic: str) -> None:
        await log.create_topic(topic, 2)
        members = []
        recorders = []
        for _ in range(2):
            member = await log.consumer(group_id=f"g-{uuid.uuid4().hex}")
            recorder = Recorder()
            member.subscribe([topic], recorder)
            members.append(member)
            recorders.append(recorder)
        await poll_until(members, lambda _: all(len(r.held) == 2 for r in recorders))
        for member in members:
            await member.close()

    async def test_a_consumer_without_a_group_cannot_subscribe(
        self, log: CommandLog, topic: str
    ) -> None:
        await log.create_topic(topic, 1)
        consumer = await log.consumer()
        with pytest.raises(LogError, match="group"):
            consumer.subscribe([topic], Recorder())
        await consumer.close()
