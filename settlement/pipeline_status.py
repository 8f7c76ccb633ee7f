"""How far every stage has got: per partition, the end of its input, where it is, the lag, and
whether it moves; and every partition that is stalled.

Read from what all processes share, so it is true when the stages run as separate processes
(`cx run risk|matching|settlement|api`): risk's, matching's and the day-ahead auction's
committed offsets and every end offset from the log, settlement's settled offsets and the
partitions it stopped at (`settlement.stalled`) from the event store. The API adds its own
market-data fold. A partition is stalled when settlement recorded a record it cannot apply
there, or when it has lag that has not moved for `stall_seconds` (CX_STALL_SECONDS), or when
its offsets could not be read for that long. `/v1/health`, `GET /v1/admin/status` and
`cx status` report it.

How long a partition has not moved is measured from the stored data, not from when the
observer first looked: until a reading sees its offset move, it has stood since at least the
log time of the record at its offset (the oldest it has not taken, appended after everything it
took), so a monitor started after a stage stopped, or `cx status`, tells at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from exchange.adapters.inprocess_log import StoredOffsets, stored_offsets, stored_timestamp
from exchange.log import CommandLog, LogConsumer, TopicPartition
from exchange.pipeline import Topics
from settlement.shards import shard_of
from settlement.sql_store import SqlEventStore
from settlement.stalled import Stall, open_stalls

CACHE_S = 0.5
"""How long one reading answers every caller (load balancers poll health often)."""
WATCH_S = 1.0
"""How often a serving API reads the pipeline whether or not anyone asks (`watch`): a stage
that moved since the previous reading counts as moving at this reading, so a stop is seen
within this plus the stall time, not within a caller's polling interval plus it."""
READ_TIMEOUT_S = 2.0
"""How long reading one source may take before it counts as unreadable."""
DIRECTORY_FRESH_S = 0.2
"""An embedded log directory read this recently answers again (one reading asks it 5 times)."""
PEEK = "\0peek"
"""The key of the group-less consumer that reads single records (apart from the one that reads
end offsets, whose assignment it would change)."""
PEEK_TIMEOUT_MS = 1_000
"""How long reading one record may wait for the broker."""
MARKET_DATA = "market-data"
"""The API process's fold of the events topic, reported as a stage of its own."""

StallKind = Literal["cannot_apply", "no_progress", "unreadable"]
log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """Where one stage is in one partition of its input."""

    stage: str
    topic: str
    partition: int
    end_offset: int
    offset: int
    """The next offset the stage will take: committed (risk, matching), settled
    (settlement), folded (market data)."""
    lag: int
    progressing: bool
    """Caught up, or moved within the stall time."""
    idle_ms: int
    """How long it has had lag without moving (0 when caught up or moving): since a reading saw
    it move, or else since the record at its offset was logged."""
    seen_moving: bool = False
    """Whether a reading saw its offset move (rather than the log's time alone telling how
    long it has stood)."""


@dataclass(frozen=True, slots=True)
class StalledPartition:
    """A stage that does not get on in a partition, and why."""

    stage: str
    topic: str
    partition: int
    kind: StallKind
    """`cannot_apply`: settlement stopped at a record it cannot apply; `no_progress`: lag that
    has not moved for the stall time; `unreadable`: where the stage is could not be read."""
    since_ms: int
    """Wall-clock time it began, ms."""
    lag: int | None
    detail: str
    offset: int | None = None
    event_id: str | None = None
    event_type: str | None = None
    attempts: int | None = None
    set_aside_by: str | None = None


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    """Every stage's progress per partition, and what is stalled."""

    checked_ms: int
    stall_seconds: float
    partitions: tuple[PartitionProgress, ...]
    stalls: tuple[StalledPartition, ...]
    unreadable: tuple[str, ...]
    """What could not be read just now, and why."""

    @property
    def stalled(self) -> bool:
        """True if any stage is stalled in any partition."""
        return bool(self.stalls)

    def describe(self) -> str:
        """One sentence naming each stall, for logs and problem details."""
        if not self.stalls:
            return "every stage is making progress"
        return "; ".join(status_sentence(stall) for stall in self.stalls)


def status_sentence(stall: StalledPartition) -> str:
    """What is stalled where, and why, in one sentence: Chinese first, then English with the
    stage's own detail."""
    chinese = f"{stall.stage} 在 {stall.topic}:{stall.partition} 停滞"
    chinese += "" if stall.lag is None else f", 延迟 {stall.lag} 条"
    where = f"{stall.stage} is stalled in {stall.topic}:{stall.partition}"
    lag = "" if stall.lag is None else f" with lag {stall.lag}"
    if stall.kind == "cannot_apply":
        chinese += f", 在偏移 {stall.offset} 处无法应用事件 {stall.event_id} ({stall.event_type})"
        return (
            f"{chinese} / {where} at offset {stall.offset}{lag}: it cannot apply event "
            f"{stall.event_id} ({stall.event_type}): {stall.detail}"
        )
    return f"{chinese} / {where}{lag}: {stall.detail}"


class OffsetSource(Protocol):
    """End offsets of topics and committed offsets of consumer groups."""

    async def end_offsets(self, topic: str, partitions: int) -> list[int]:
        """The end offset of each partition of `topic`."""

    async def committed(self, group: str, topic: str, partitions: int) -> list[int]:
        """The group's committed offset of each partition (0 where none)."""

    async def logged_at(self, topic: str, partition: int, offset: int) -> int | None:
        """The log time (ms) of the record at `offset`, None if it cannot be read."""

    async def close(self) -> None:
        """Release what it holds."""


class LogOffsets:
    """Offsets through the log port, with a consumer per group kept for the next reading."""

    def __init__(self, command_log: CommandLog) -> None:
        self.log = command_log
        self._consumers: dict[str | None, LogConsumer] = {}
        self._logged: dict[tuple[TopicPartition, int], int] = {}

    async def _consumer(self, group: str | None) -> LogConsumer:
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = await self.log.consumer(group_id=None if group == PEEK else group)
            self._consumers[group] = consumer
        return consumer

    async def end_offsets(self, topic: str, partitions: int) -> list[int]:
        """The end offset of each partition of `topic`."""
        async with self._using(None) as consumer:
            return [await consumer.end_offset(TopicPartition(topic, p)) for p in range(partitions)]

    async def committed(self, group: str, topic: str, partitions: int) -> list[int]:
        """The group's committed offset of each partition (0 where none)."""
        async with self._using(group) as consumer:
            return [
                await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)
            ]

    async def logged_at(self, topic: str, partition: int, offset: int) -> int | None:
        """The log time (ms) of the record at `offset`: read with a consumer of no group that
        takes only it; a record's time never changes, so it is remembered."""
        tp = TopicPartition(topic, partition)
        known = self._logged.get((tp, offset))
        if known is not None:
            return known
        async with self._using(PEEK) as consumer:
            consumer.assign([tp])
            consumer.seek(tp, offset)
            records = await consumer.getmany(timeout_ms=PEEK_TIMEOUT_MS, max_records=1)
        found = next((r.timestamp_ms for r in records if (r.topic, r.partition) == tp), None)
        if found is not None:
            if len(self._logged) >= 1_024:
                self._logged.clear()
            self._logged[(tp, offset)] = found
        return found

    @asynccontextmanager
    async def _using(self, group: str | None) -> AsyncIterator[LogConsumer]:
        """The group's consumer; one that fails (or is cancelled) is replaced next time."""
        consumer = await self._consumer(group)
        try:
            yield consumer
        except BaseException:
            self._consumers.pop(group, None)
            with contextlib.suppress(Exception):
                await consumer.close()
            raise

    async def close(self) -> None:
        """Close the consumers."""
        consumers, self._consumers = self._consumers, {}
        for consumer in consumers.values():
            await consumer.close()


class DirectoryOffsets:
    """Offsets of an embedded log's directory, read from its files (`stored_offsets`), so
    another process may inspect a running exchange."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = asyncio.Lock()
        self._read: tuple[float, StoredOffsets] | None = None

    async def _stored(self) -> StoredOffsets:
        """The directory's offsets, read once for all the questions of one reading."""
        async with self._lock:
            if self._read is None or time.monotonic() - self._read[0] > DIRECTORY_FRESH_S:
                stored = await asyncio.to_thread(stored_offsets, self.directory)
                self._read = (time.monotonic(), stored)
            return self._read[1]

    async def end_offsets(self, topic: str, partitions: int) -> list[int]:
        """The end offset of each partition of `topic`."""
        ends = (await self._stored()).ends
        return [ends.get(TopicPartition(topic, p), 0) for p in range(partitions)]

    async def committed(self, group: str, topic: str, partitions: int) -> list[int]:
        """The group's committed offset of each partition (0 where none)."""
        mine = (await self._stored()).committed.get(group, {})
        return [mine.get(TopicPartition(topic, p), 0) for p in range(partitions)]

    async def logged_at(self, topic: str, partition: int, offset: int) -> int | None:
        """The log time (ms) of the record at `offset`, read from its file."""
        tp = TopicPartition(topic, partition)
        return await asyncio.to_thread(stored_timestamp, self.directory, tp, offset)

    async def close(self) -> None:
        """Nothing to release."""


@dataclass
class _Seen:
    offset: int
    since: float
    """Monotonic time since which the offset has stood still with lag."""
    moved: bool
    """Whether a reading saw it move to `offset` (else `since` is the log's word)."""
    caught_up: bool
    """Whether it had no lag at that reading."""


class StatusMonitor:
    """Reads the pipeline's status, at most once per `cache_s` whoever asks, and judges
    progress by comparing each reading with the ones before.

    A partition first read with lag has stood, as far as can be known, since the record at
    its offset was logged (`OffsetSource.logged_at`, the log's time against the wall clock):
    a first reading already sees a stage that stopped longer than `stall_seconds` ago. From
    then on readings compare offsets: a move starts the time again.
    """

    def __init__(
        self,
        offsets: OffsetSource,
        topics: Topics,
        store: SqlEventStore,
        stall_seconds: float,
        folded: Callable[[], Mapping[int, int]] | None = None,
        cache_s: float = CACHE_S,
        clock: Callable[[], float] = time.monotonic,
        shards: Sequence[SqlEventStore] = (),
    ) -> None:
        self.offsets = offsets
        self.topics = topics
        self.store = store
        self.shards = list(shards) or [store]
        """Every settlement shard's store (the home shard's first): each knows how far its
        partitions are settled and where they stalled."""
        self.stall_seconds = stall_seconds
        self.folded = folded
        """The API's market-data fold: next offset per events partition."""
        self.cache_s = cache_s
        self.clock = clock
        """Seconds, only ever compared with each other (monotonic)."""
        self._seen: dict[tuple[str, int], _Seen] = {}
        self._unreadable_since: dict[str, float] = {}
        self._latest: PipelineStatus | None = None
        self._latest_at = 0.0
        self._lock = asyncio.Lock()

    async def status(self) -> PipelineStatus:
        """The latest reading, or a new one if it is older than `cache_s`."""
        async with self._lock:
            now = self.clock()
            if self._latest is None or now - self._latest_at >= self.cache_s:
                self._latest = await self._read()
                self._latest_at = self.clock()
            return self._latest

    async def watch(self, stop: asyncio.Event, every_s: float = WATCH_S) -> None:
        """Read the pipeline every `every_s` until `stop`, so that each partition's progress
        is judged between readings that far apart, however rarely health is asked for."""
        while not stop.is_set():
            try:
                await self.status()
            except Exception:
                log.exception("reading the pipeline's status failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    async def close(self) -> None:
        """Release the offset source."""
        await self.offsets.close()

    async def _read(self) -> PipelineStatus:
        topics = self.topics
        layout = {
            "risk": (topics.commands, topics.command_partitions),
            "matching": (topics.orders, topics.market_partitions),
            "dayahead": (topics.dayahead, 1),
            "settlement": (topics.events, topics.market_partitions),
        }
        if self.folded is not None:
            layout[MARKET_DATA] = (topics.events, topics.market_partitions)
        # Every source at once, so a source that is away costs one READ_TIMEOUT_S, not one each.
        topic_counts = sorted(set(layout.values()))
        groups = ("risk", "matching", "dayahead")
        found_ends, found_committed, (settled,) = await asyncio.gather(
            asyncio.gather(
                *(_within(self.offsets.end_offsets(topic, n)) for topic, n in topic_counts),
                return_exceptions=True,
            ),
            asyncio.gather(
                *(
                    _within(self.offsets.committed(topics.group(stage), *layout[stage]))
                    for stage in groups
                ),
                return_exceptions=True,
            ),
            asyncio.gather(_within(self._settled()), return_exceptions=True),
        )
        problems: dict[str, str] = {}
        ends: dict[str, list[int]] = {}
        for (topic, _), ended in zip(topic_counts, found_ends, strict=True):
            if isinstance(ended, BaseException):
                why = f"cannot read the end offsets of {topic}: {_why(ended)}"
                for stage, (read, _) in layout.items():
                    if read == topic:
                        problems.setdefault(stage, why)
            else:
                ends[topic] = ended
        done: dict[str, list[int]] = {}
        for stage, committed in zip(groups, found_committed, strict=True):
            if isinstance(committed, BaseException):
                problems.setdefault(stage, f"cannot read its committed offsets: {_why(committed)}")
            else:
                done[stage] = committed
        recorded: list[Stall] = []
        if isinstance(settled, BaseException):
            problems.setdefault("settlement", f"cannot read the event store: {_why(settled)}")
        else:
            done["settlement"], recorded = settled
        if self.folded is not None:
            folded = self.folded()
            done[MARKET_DATA] = [folded.get(p, 0) for p in range(topics.market_partitions)]

        readable = [
            (stage, topic, partition, ends[topic][partition], done[stage][partition])
            for stage, (topic, count) in layout.items()
            if stage not in problems
            for partition in range(count)
        ]
        logged = await self._logged_at(readable)
        now = self.clock()
        wall = _wall_ms()
        partitions = [
            self._judge(stage, topic, partition, end, offset, now, wall, logged)
            for stage, topic, partition, end, offset in readable
        ]
        lags = {(p.stage, p.partition): p.lag for p in partitions}
        stalls = [
            StalledPartition(
                stage=stall.stage,
                topic=stall.topic,
                partition=stall.partition,
                kind="cannot_apply",
                since_ms=stall.since_ms,
                lag=lags.get((stall.stage, stall.partition)),
                detail=stall.error,
                offset=stall.offset,
                event_id=stall.event_id,
                event_type=stall.event_type,
                attempts=stall.attempts,
                set_aside_by=stall.set_aside_by,
            )
            for stall in recorded
        ]
        explained = {(s.stage, s.partition) for s in stalls}
        stalls += [
            StalledPartition(
                stage=p.stage,
                topic=p.topic,
                partition=p.partition,
                kind="no_progress",
                since_ms=wall - p.idle_ms,
                lag=p.lag,
                detail=f"offset {p.offset} has not moved for {p.idle_ms / 1000:.1f}s with lag",
                offset=p.offset,
            )
            for p in partitions
            if not p.progressing and (p.stage, p.partition) not in explained
        ]
        for stage in layout:
            if stage not in problems:
                self._unreadable_since.pop(stage, None)
                continue
            since = self._unreadable_since.setdefault(stage, now)
            if now - since < self.stall_seconds:
                continue
            topic, count = layout[stage]
            stalls += [
                StalledPartition(
                    stage=stage,
                    topic=topic,
                    partition=partition,
                    kind="unreadable",
                    since_ms=wall - int((now - since) * 1000),
                    lag=None,
                    detail=problems[stage],
                )
                for partition in range(count)
            ]
        return PipelineStatus(
            checked_ms=wall,
            stall_seconds=self.stall_seconds,
            partitions=tuple(partitions),
            stalls=tuple(stalls),
            unreadable=tuple(f"{stage}: {why}" for stage, why in problems.items()),
        )

    async def _logged_at(
        self, readable: list[tuple[str, str, int, int, int]]
    ) -> dict[tuple[str, int, int], int]:
        """The log time of the record at the offset of each partition first read with lag
        (after that, readings tell whether it moved); one that cannot be read is left out."""
        wanted = sorted(
            {
                (topic, partition, offset)
                for stage, topic, partition, end, offset in readable
                if end > offset and self._lag_began_unseen(stage, partition, offset)
            }
        )
        found = await asyncio.gather(
            *(_within(self.offsets.logged_at(*where)) for where in wanted),
            return_exceptions=True,
        )
        return {where: ts for where, ts in zip(wanted, found, strict=True) if isinstance(ts, int)}

    def _lag_began_unseen(self, stage: str, partition: int, offset: int) -> bool:
        """Whether a partition now behind at `offset` began to lag since the last reading (or
        was never read): only the log can tell since when."""
        seen = self._seen.get((stage, partition))
        return seen is None or (seen.caught_up and seen.offset == offset)

    def _judge(
        self,
        stage: str,
        topic: str,
        partition: int,
        end: int,
        offset: int,
        now: float,
        wall: int,
        logged: Mapping[tuple[str, int, int], int],
    ) -> PartitionProgress:
        """The partition's progress, against the offset it stood at in earlier readings or,
        where its lag began unseen, the time the record at its offset was logged."""
        lag = max(0, end - offset)
        key = (stage, partition)
        seen = self._seen.get(key)
        logged_ms = logged.get((topic, partition, offset))
        # It has stood at least since its next record was logged (the log's time is the wall
        # clock's; a log time ahead of it counts as now).
        waited_since = now - max(0, wall - logged_ms) / 1000 if logged_ms is not None else now
        if lag == 0:
            seen = self._seen[key] = _Seen(offset, now, moved=True, caught_up=True)
        elif seen is None:
            seen = self._seen[key] = _Seen(offset, waited_since, moved=False, caught_up=False)
        elif seen.offset != offset:
            seen = self._seen[key] = _Seen(offset, now, moved=True, caught_up=False)
        elif seen.caught_up:
            # Its lag began after the reading that found it caught up, and not before its
            # next record was logged: a gap between readings is not taken for a stall.
            since = max(seen.since, waited_since) if logged_ms is not None else seen.since
            seen = self._seen[key] = _Seen(offset, since, moved=seen.moved, caught_up=False)
        idle = 0.0 if lag == 0 else now - seen.since
        return PartitionProgress(
            stage=stage,
            topic=topic,
            partition=partition,
            end_offset=end,
            offset=offset,
            lag=lag,
            progressing=idle < self.stall_seconds,
            idle_ms=int(idle * 1000),
            seen_moving=seen.moved,
        )

    async def _settled(self) -> tuple[list[int], list[Stall]]:
        topic, count = self.topics.events, len(self.shards)
        stored = [await shard.consumer_offsets("settlement") for shard in self.shards]
        done = [
            stored[shard_of(p, count)].get((topic, p), 0)
            for p in range(self.topics.market_partitions)
        ]
        stalls = [stall for shard in self.shards for stall in await open_stalls(shard.engine)]
        return done, stalls


async def _within(reading: Awaitable[T]) -> T:
    """`reading`, or TimeoutError after READ_TIMEOUT_S."""
    async with asyncio.timeout(READ_TIMEOUT_S):
        return await reading


def _why(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:300]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
