"""The in-process command log: the contract, on disk and in memory, plus its durability."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from exchange.adapters.inprocess_log import InProcessLog
from exchange.log import CommandLog, LogError, TopicPartition
from tests.contract.command_log import CommandLogContract, GroupContract, LogFactory, read_exactly


class TestInProcessLog(CommandLogContract, GroupContract):
    """The contract on a durable log: every new connection reopens the same directory."""

    @pytest.fixture
    def log_factory(self, tmp_path: Path) -> LogFactory:
        async def factory() -> CommandLog:
            return InProcessLog(tmp_path / "log")

        return factory


class TestInProcessLogInMemory(CommandLogContract, GroupContract):
    """The contract on a log that lives in memory only."""

    log_survives_restart: ClassVar[bool] = False

    @pytest.fixture
    def log_factory(self) -> LogFactory:
        async def factory() -> CommandLog:
            return InProcessLog()

        return factory


def stepping_clock(*values: int) -> Iterator[int]:
    """Yield the given times, then keep repeating the last."""
    yield from values
    while True:
        yield values[-1]


def frames_file(directory: Path, topic: str, partition: int) -> Path:
    """The file holding one partition's frames."""
    return directory / "topics" / topic / f"{partition}.log"


async def write_and_close(directory: Path, values: list[bytes]) -> None:
    """Create topic t with one partition holding `values`, then close the log."""
    log = InProcessLog(directory)
    await log.create_topic("t", 1)
    producer = await log.producer()
    for value in values:
        await producer.send("t", 0, value, b"k")
    await log.close()


async def read_back(directory: Path, topic: str = "t", partition: int = 0) -> list[bytes]:
    """Open the log at `directory` and return every value of one partition."""
    log = InProcessLog(directory)
    try:
        consumer = await log.consumer()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        return [r.value for r in await read_exactly(consumer, await consumer.end_offset(tp))]
    finally:
        await log.close()


async def test_everything_survives_a_restart(tmp_path: Path) -> None:
    clock = stepping_clock(1_000, 2_000, 3_000)
    log = InProcessLog(tmp_path, clock_ms=lambda: next(clock))
    await log.create_topic("orders", 2)
    await log.create_topic("events", 1)
    producer = await log.producer()
    written = [
        await producer.send_and_wait("orders", 0, b"first", None),
        await producer.send_and_wait("orders", 1, b"", b"acct-7"),
        await producer.send_and_wait("events", 0, bytes(range(256)), b""),
    ]
    consumer = await log.consumer("risk")
    consumer.assign([TopicPartition("orders", 0)])
    await consumer.commit({TopicPartition("orders", 0): 1})
    await log.close()

    reopened = InProcessLog(tmp_path, clock_ms=lambda: 10)
    try:
        assert await reopened.partitions("orders") == 2
        assert await reopened.partitions("events") == 1
        reader = await reopened.consumer("risk")
        reader.assign([TopicPartition("orders", 1), TopicPartition("events", 0)])
        assert sorted(await read_exactly(reader, 2), key=lambda r: r.topic) == sorted(
            written[1:], key=lambda r: r.topic
        )
        assert await reader.committed(TopicPartition("orders", 0)) == 1
        assert await reader.committed(TopicPartition("orders", 1)) is None
        # Offsets continue, and time read from the log never goes back across a restart.
        appended = await (await reopened.producer()).send_and_wait("orders", 0, b"second")
        assert (appended.offset, appended.timestamp_ms) == (1, 1_000)
    finally:
        await reopened.close()


async def test_flushed_records_survive_a_crash_without_close(tmp_path: Path) -> None:
    log = InProcessLog(tmp_path / "live")
    try:
        await log.create_topic("t", 1)
        producer = await log.producer()
        for i in range(100):
            await producer.send("t", 0, b"%d" % i)
        await producer.flush()
        # A copy taken now is what a crash right after flush leaves behind.
        shutil.copytree(
            tmp_path / "live", tmp_path / "crashed", ignore=shutil.ignore_patterns(".lock")
        )
    finally:
        await log.close()

    assert await read_back(tmp_path / "crashed") == [b"%d" % i for i in range(100)]


async def test_a_torn_final_frame_is_truncated_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await write_and_close(tmp_path, [b"one", b"two", b"three"])
    path = frames_file(tmp_path, "t", 0)
    intact = path.read_bytes()
    frame = intact[: len(intact) // 3]
    with path.open("ab") as file:
        file.write(frame[:-2])

    with caplog.at_level(logging.WARNING, logger="exchange.adapters.inprocess_log"):
        assert await read_back(tmp_path) == [b"one", b"two", b"three"]

    assert path.read_bytes() == intact
    assert "torn or corrupt" in caplog.text


async def test_a_torn_frame_header_is_truncated_on_open(tmp_path: Path) -> None:
    await write_and_close(tmp_path, [b"one"])
    path = frames_file(tmp_path, "t", 0)
    with path.open("ab") as file:
        file.write(b"\x05\x00")

    assert await read_back(tmp_path) == [b"one"]
    await write_and_close(tmp_path, [b"two"])
    assert await read_back(tmp_path) == [b"one", b"two"]


async def test_a_final_frame_with_a_bad_checksum_is_dropped(tmp_path: Path) -> None:
    await write_and_close(tmp_path, [b"one", b"two"])
    path = frames_file(tmp_path, "t", 0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    assert await read_back(tmp_path) == [b"one"]


async def test_appends_after_a_truncation_continue_the_offsets(tmp_path: Path) -> None:
    await write_and_close(tmp_path, [b"one", b"two"])
    path = frames_file(tmp_path, "t", 0)
    path.write_bytes(path.read_bytes()[:-1])

    log = InProcessLog(tmp_path)
    try:
        record = await (await log.producer()).send_and_wait("t", 0, b"again")
    finally:
        await log.close()

    assert record.offset == 1
    assert await read_back(tmp_path) == [b"one", b"again"]


async def test_a_directory_is_used_by_one_log_at_a_time(tmp_path: Path) -> None:
    log = InProcessLog(tmp_path)
    try:
        with pytest.raises(LogError):
            InProcessLog(tmp_path)
    finally:
        await log.close()

    await InProcessLog(tmp_path).close()


async def test_fsync_mode_stores_records_and_offsets(tmp_path: Path) -> None:
    log = InProcessLog(tmp_path, fsync=True)
    await log.create_topic("t", 1)
    producer = await log.producer()
    await producer.send("t", 0, b"a")
    await producer.send_and_wait("t", 0, b"b")
    consumer = await log.consumer("g")
    consumer.assign([TopicPartition("t", 0)])
    await read_exactly(consumer, 2)
    await consumer.commit({TopicPartition("t", 0): 2})
    await log.close()

    assert await read_back(tmp_path) == [b"a", b"b"]
    reopened = InProcessLog(tmp_path)
    try:
        assert await (await reopened.consumer("g")).committed(TopicPartition("t", 0)) == 2
    finally:
        await reopened.close()


async def test_an_in_memory_log_touches_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    log = InProcessLog()
    await log.create_topic("t", 2)
    producer = await log.producer()
    await producer.send("t", 1, b"x", b"k")
    await producer.flush()
    consumer = await log.consumer("g")
    consumer.assign([TopicPartition("t", 1)])
    [record] = await read_exactly(consumer, 1)
    await consumer.commit({TopicPartition("t", 1): record.offset + 1})
    await log.close()

    assert (record.key, record.value, record.offset) == (b"k", b"x", 0)
    assert os.listdir(tmp_path) == []


async def test_timestamps_hold_when_the_clock_steps_back() -> None:
    clock = stepping_clock(500, 300, 900, 100)
    log = InProcessLog(clock_ms=lambda: next(clock))
    await log.create_topic("t", 2)
    producer = await log.producer()

    stamps = [
        (await producer.send_and_wait("t", 0, b"a")).timestamp_ms,
        (await producer.send_and_wait("t", 0, b"b")).timestamp_ms,
        (await producer.send_and_wait("t", 0, b"c")).timestamp_ms,
        (await producer.send_and_wait("t", 1, b"d")).timestamp_ms,
    ]
    await log.close()

    assert stamps == [500, 500, 900, 100]


async def test_closing_wakes_a_waiting_reader() -> None:
    log = InProcessLog()
    await log.create_topic("t", 1)
    consumer = await log.consumer()
    consumer.assign([TopicPartition("t", 0)])
    reading = asyncio.create_task(consumer.getmany(timeout_ms=30_000))
    await asyncio.sleep(0.01)

    await log.close()

    with pytest.raises(LogError):
        await asyncio.wait_for(reading, 1.0)


async def test_seeking_outside_the_partition_raises() -> None:
    log = InProcessLog()
    await log.create_topic("t", 1)
    consumer = await log.consumer("g")
    tp = TopicPartition("t", 0)
    consumer.assign([tp])

    with pytest.raises(LogError):
        consumer.seek(tp, 1)
    with pytest.raises(LogError):
        await consumer.commit({tp: 1})
    await log.close()


async def test_invalid_topic_names_are_refused() -> None:
    log = InProcessLog()
    for name in ("", "..", "a/b", "x" * 250, "sp ace"):
        with pytest.raises(LogError):
            await log.create_topic(name, 1)
    await log.close()
