"""The status monitor judges progress across readings, and reads an embedded log's directory
without opening the log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cx.migrations import upgrade_to_head
from exchange.adapters.inprocess_log import InProcessLog, stored_offsets
from exchange.log import LogError, TopicPartition
from exchange.pipeline import Topics
from settlement.pipeline_status import (
    DIRECTORY_FRESH_S,
    DirectoryOffsets,
    LogOffsets,
    PipelineStatus,
    StatusMonitor,
)
from settlement.sql_store import SqliteEventStore

TOPICS = Topics.named("t", 1, 1)
STALL_S = 30.0


class Offsets:
    """Offsets a test sets by hand; `away` makes every read fail."""

    def __init__(self) -> None:
        self.ends = {TOPICS.commands: 0, TOPICS.orders: 0, TOPICS.events: 0, TOPICS.dayahead: 0}
        self.done = {"t.risk": 0, "t.matching": 0, "t.dayahead": 0}
        self.logged: dict[tuple[str, int], int] = {}
        """Log time of the record at (topic, offset); none known unless set."""
        self.away = False

    async def end_offsets(self, topic: str, partitions: int) -> list[int]:
        if self.away:
            raise LogError("the broker is away")
        return [self.ends[topic]]

    async def committed(self, group: str, topic: str, partitions: int) -> list[int]:
        if self.away:
            raise LogError("the broker is away")
        return [self.done[group]]

    async def logged_at(self, topic: str, partition: int, offset: int) -> int | None:
        return self.logged.get((topic, offset))

    async def close(self) -> None:
        pass


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = SqliteEventStore(tmp_path / "events.db")
    await opened.initialise(upgrade_to_head)
    yield opened
    await opened.close()


class Clock:
    """Monotonic seconds the test moves on."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def monitor(offsets: Offsets, store: SqliteEventStore, clock: Clock) -> StatusMonitor:
    return StatusMonitor(offsets, TOPICS, store, STALL_S, cache_s=0.0, clock=clock)


async def test_a_lag_that_does_not_move_for_the_stall_time_is_a_stall(
    store: SqliteEventStore,
) -> None:
    offsets = Offsets()
    clock = Clock()
    watching = monitor(offsets, store, clock)
    offsets.ends[TOPICS.orders] = 5
    offsets.done["t.matching"] = 2
    first = await watching.status()
    assert not first.stalled
    (matching,) = [p for p in first.partitions if p.stage == "matching"]
    assert (matching.end_offset, matching.offset, matching.lag, matching.progressing) == (
        5,
        2,
        3,
        True,
    )
    clock.now += STALL_S / 2
    offsets.done["t.matching"] = 3  # it moved: the clock starts again
    assert not (await watching.status()).stalled
    clock.now += STALL_S * 0.7  # more than the stall time since the first reading
    assert not (await watching.status()).stalled
    clock.now += STALL_S * 0.5
    later = await watching.status()
    (stall,) = later.stalls
    assert (stall.stage, stall.partition, stall.kind, stall.lag, stall.offset) == (
        "matching",
        0,
        "no_progress",
        2,
        3,
    )
    assert "matching is stalled in t.orders:0 with lag 2" in later.describe()
    offsets.done["t.matching"] = 5  # caught up
    assert not (await watching.status()).stalled


async def test_a_source_that_cannot_be_read_for_the_stall_time_is_a_stall(
    store: SqliteEventStore,
) -> None:
    offsets = Offsets()
    clock = Clock()
    watching = monitor(offsets, store, clock)
    offsets.away = True
    first = await watching.status()
    assert not first.stalled
    assert first.partitions == ()
    assert set(first.unreadable) == {
        "risk: cannot read the end offsets of t.commands: the broker is away",
        "matching: cannot read the end offsets of t.orders: the broker is away",
        "settlement: cannot read the end offsets of t.events: the broker is away",
        "dayahead: cannot read the end offsets of t.dayahead: the broker is away",
    }
    clock.now += STALL_S
    later = await watching.status()
    assert {(s.stage, s.kind) for s in later.stalls} == {
        ("risk", "unreadable"),
        ("matching", "unreadable"),
        ("dayahead", "unreadable"),
        ("settlement", "unreadable"),
    }
    offsets.away = False
    assert not (await watching.status()).stalled


async def test_one_reading_answers_every_caller_for_the_cache_time(
    store: SqliteEventStore,
) -> None:
    offsets = Offsets()
    clock = Clock()
    watching = StatusMonitor(offsets, TOPICS, store, STALL_S, cache_s=0.5, clock=clock)
    first, second = await asyncio.gather(watching.status(), watching.status())
    assert first is second
    offsets.ends[TOPICS.commands] = 9
    clock.now += 0.4
    assert await watching.status() is first
    clock.now += 0.2
    fresh = await watching.status()
    assert [p.end_offset for p in fresh.partitions if p.stage == "risk"] == [9]


async def test_a_log_directory_in_use_is_read_from_its_files(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    log = InProcessLog(directory)
    try:
        await TOPICS.create(log)
        producer = await log.producer()
        for n in range(3):
            await producer.send_and_wait(TOPICS.orders, 0, f"record {n}".encode())
        await producer.close()
        consumer = await log.consumer(group_id="t.matching")
        consumer.assign([TopicPartition(TOPICS.orders, 0)])
        await consumer.commit({TopicPartition(TOPICS.orders, 0): 2})
        with pytest.raises(LogError, match="in use"):
            InProcessLog(directory)
        stored = stored_offsets(directory)
        assert stored.ends[TopicPartition(TOPICS.orders, 0)] == 3
        assert stored.ends[TopicPartition(TOPICS.events, 0)] == 0
        assert stored.committed == {"t.matching": {TopicPartition(TOPICS.orders, 0): 2}}
        offsets = DirectoryOffsets(directory)
        assert await offsets.end_offsets(TOPICS.orders, 1) == [3]
        assert await offsets.committed("t.matching", TOPICS.orders, 1) == [2]
        assert await offsets.committed("t.risk", TOPICS.commands, 1) == [0]
    finally:
        await log.close()


@pytest.mark.parametrize("source", ["directory", "log"])
async def test_a_stage_that_stopped_before_anyone_looked_is_stalled_at_the_first_reading(
    tmp_path: Path, store: SqliteEventStore, source: str
) -> None:
    """Matching took 2 of 4 records and stopped; the records it has not taken were logged 45 s
    ago. A monitor that starts now (an API restarted, `cx status`) measures from the log, not
    from its own first look: matching is stalled at once, and risk, which took everything,
    is caught up. Once matching moves, the time starts again from that reading. Read from
    the log directory's files (`cx status` beside an embedded exchange) and through the log
    port (the API process; on Kafka the same calls)."""
    directory = tmp_path / "log"
    logged_ms = time.time_ns() // 1_000_000 - 45_000
    log = InProcessLog(directory, clock_ms=lambda: logged_ms)
    try:
        await TOPICS.create(log)
        producer = await log.producer()
        for n in range(4):
            await producer.send_and_wait(TOPICS.orders, 0, f"record {n}".encode())
        await producer.close()
        orders = TopicPartition(TOPICS.orders, 0)
        consumer = await log.consumer(group_id="t.matching")
        consumer.assign([orders])
        await consumer.commit({orders: 2})
        offsets: DirectoryOffsets | LogOffsets = (
            DirectoryOffsets(directory) if source == "directory" else LogOffsets(log)
        )
        assert await offsets.logged_at(TOPICS.orders, 0, 2) == logged_ms
        assert await offsets.logged_at(TOPICS.orders, 0, 4) is None
        clock = Clock()
        watching = StatusMonitor(offsets, TOPICS, store, STALL_S, cache_s=0.0, clock=clock)
        first = await watching.status()
        (stall,) = first.stalls
        assert (stall.stage, stall.kind, stall.lag, stall.offset) == (
            "matching",
            "no_progress",
            2,
            2,
        )
        (matching,) = [p for p in first.partitions if p.stage == "matching"]
        assert (matching.progressing, matching.seen_moving) == (False, False)
        assert 45_000 <= matching.idle_ms < 50_000, matching.idle_ms
        assert abs(stall.since_ms - logged_ms) < 5_000

        await consumer.commit({orders: 3})
        await asyncio.sleep(DIRECTORY_FRESH_S + 0.05)  # the directory is read afresh
        clock.now += 1
        moved = await watching.status()
        assert not moved.stalled
        (matching,) = [p for p in moved.partitions if p.stage == "matching"]
        assert (matching.progressing, matching.seen_moving, matching.idle_ms) == (True, True, 0)
        await consumer.close()
        await offsets.close()
    finally:
        await log.close()


async def test_a_lag_that_began_after_a_long_gap_between_readings_is_not_a_stall(
    store: SqliteEventStore,
) -> None:
    """Matching was caught up at the last reading, a long time ago; a record logged a moment
    ago puts it behind. It has stood since that record, not since the old reading."""
    offsets = Offsets()
    clock = Clock()
    watching = monitor(offsets, store, clock)
    offsets.ends[TOPICS.orders] = offsets.done["t.matching"] = 2
    assert not (await watching.status()).stalled
    clock.now += STALL_S * 10
    offsets.ends[TOPICS.orders] = 3
    offsets.logged[(TOPICS.orders, 2)] = time.time_ns() // 1_000_000 - 1_000
    status = await watching.status()
    assert not status.stalled, status.describe()
    (matching,) = [p for p in status.partitions if p.stage == "matching"]
    assert 1_000 <= matching.idle_ms < 5_000, matching.idle_ms
    clock.now += STALL_S
    assert [s.stage for s in (await watching.status()).stalls] == ["matching"]


async def test_watching_judges_a_stop_between_readings_a_second_apart(
    store: SqliteEventStore,
) -> None:
    """A serving API reads the pipeline every second (`watch`), so a stage that moved since
    the last reading is timed from that reading: a caller asking rarely sees the stop once it
    is the stall time old, not its own interval later. Here the stage moves, then stops."""
    offsets = Offsets()
    clock = Clock()
    watching = monitor(offsets, store, clock)
    offsets.ends[TOPICS.orders] = 10
    offsets.done["t.matching"] = 2
    stop = asyncio.Event()
    readings = 0
    real_read = watching._read

    async def read_at_the_next_second() -> PipelineStatus:
        nonlocal readings
        readings += 1
        clock.now += 1.0
        if readings == 3:
            offsets.done["t.matching"] = 4  # it moved, and stops there
        if readings == 3 + int(STALL_S) + 2:
            stop.set()
        return await real_read()

    watching._read = read_at_the_next_second  # type: ignore[method-assign]
    await asyncio.wait_for(watching.watch(stop, every_s=0.001), 30)
    # Nobody asked in between: the reading a caller gets now already names the stall.
    (stall,) = (await watching.status()).stalls
    assert (stall.stage, stall.offset, stall.kind) == ("matching", 4, "no_progress")
