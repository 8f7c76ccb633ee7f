"""The settlement stage: stores every event exactly once, with the ledger, in PostgreSQL or SQLite.

It follows aiokafka's documented sink pattern instead of Kafka transactions: each batch of
events, the next offsets of the partitions it came from and the projection's rows are written
in one database transaction, and on start the consumer seeks to the stored offsets. After a
failed attempt the projection is reloaded, since its in-memory state may hold the failed batch.

A failure is one of two kinds. While the database is unreachable, the batch is retried with
backoff for as long as it takes. When the database answers, the batch is settled in smaller
runs per partition until one record fails on its own: everything before it is settled, its
partition stops there (`settlement.stalled` records the stall for every process to see) and
the other partitions go on. A stalled partition is tried again from time to time (a repaired
database or a fixed release applies it) and goes on past the record once an operator sets it
aside to the dead-letter topic (docs/DESIGN.md, "When settlement cannot apply an event").
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Mapping

import orjson
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError

from exchange.deadletters import send_dead_letter, source_of
from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import ALL_CONTRACTS, AnyEvent, Event, decode_event
from exchange.log import (
    CommandLog,
    LogConsumer,
    LogError,
    LogProducer,
    LogRecord,
    TopicPartition,
)
from exchange.pipeline import POLL_MAX_RECORDS, POLL_TIMEOUT_MS, Topics
from settlement.projections import LedgerProjection
from settlement.snapshots import SqlSnapshotStore
from settlement.sql_store import SqlEventStore, writing
from settlement.stalled import Resolution, Stall, open_stalls, record_stall, resolve
from settlement.store import NewEvent, OffsetKey

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.1
RETRY_MAX_S = 5.0
STALL_RETRY_INITIAL_S = 2.0
"""A stalled partition's record is tried again after this long, then twice as long each time."""
STALL_RETRY_MAX_S = 60.0
STALL_CHECK_S = 1.0
"""How often, while a partition is stalled, the stall table is read for operators' decisions."""
ERROR_CHARS = 2000
READ_ATTEMPTS = 10


def stream_of(event: Event) -> str:
    """The stream an event belongs to: a day-ahead auction's own, else its contract, else its
    account, else the exchange (market-wide controls)."""
    for name in _stream_fields(type(event)):
        value = getattr(event, name, None)
        if not isinstance(value, str):
            continue
        if name == "day":
            return day_ahead_stream(value)
        if name == "account_id":
            return f"account-{value}"
        if value != ALL_CONTRACTS:
            return f"contract-{value}"
    return "exchange"


@functools.cache
def _stream_fields(kind: type[Event]) -> tuple[str, ...]:
    """The fields naming a stream that an event type has, first the one that decides: asking a
    pydantic model for a field it lacks raises inside it, about 2 µs an event."""
    return tuple(name for name in ("day", "symbol", "account_id") if name in kind.model_fields)


def day_ahead_stream(day: str) -> str:
    """The stream of the day-ahead auction of `day` (CST date): the bids every matching
    partition brought, each partition's share of the result, and the result."""
    return f"day-ahead-{day}"


def to_new_event(event: AnyEvent, record: LogRecord) -> NewEvent:
    """The stored form of an event read from the log, with where it was read as metadata.

    The event is stored as it was written, in its own schema version; readers upcast it.
    """
    data = orjson.loads(record.value)
    return NewEvent(
        event_id=event.event_id,
        stream_id=stream_of(event),
        type=event.type,
        data=data,
        metadata={"topic": record.topic, "partition": record.partition, "offset": record.offset},
        schema_version=int(data.get("v", 1)),
        data_json=record.value.decode(),
    )


class SettlementRunner:
    """Consumes the events topic into the event store and the ledger projection."""

    name = "settlement"

    def __init__(
        self,
        command_log: CommandLog,
        topics: Topics,
        store: SqlEventStore,
        catalogue: Catalogue,
        partitions: Iterable[int] | None = None,
        *,
        shard: int = 0,
    ) -> None:
        self.log = command_log
        self.shard = shard
        """The settlement shard this runner settles (`settlement.shards`); 0 when unsharded."""
        self.store = store
        self.snapshots = SqlSnapshotStore(store.engine)
        self.projection = LedgerProjection(catalogue, partitions=topics.market_partitions)
        self.topics = topics
        self._deadletters_producer: LogProducer | None = None
        self._consumer: LogConsumer | None = None
        chosen = range(topics.market_partitions) if partitions is None else partitions
        self.partitions = [TopicPartition(topics.events, p) for p in chosen]
        self.settled = asyncio.Condition()
        self.positions: dict[TopicPartition, int] = {}
        self.stalls: dict[TopicPartition, Stall] = {}
        """Partitions stopped at a record that cannot be applied: nothing after it is read."""
        self._unsettled: dict[TopicPartition, Stall] = {}
        """Stalls whose partition reads again (a retry, or a restart): over once passed."""
        self._stopped_at: dict[TopicPartition, LogRecord] = {}
        self._retry_at: dict[TopicPartition, float] = {}
        self._retry_delay: dict[TopicPartition, float] = {}
        self._stalls_checked = 0.0
        self._reload = False
        self._reassign = False

    async def run(self, stop: asyncio.Event) -> None:
        """Settle until `stop` is set."""
        await self.projection.load(self.store, self.snapshots)
        stored = await self.store.consumer_offsets(self.name)
        self._consumer = await self.log.consumer()
        self._deadletters_producer = await self.log.producer()
        try:
            for tp in self.partitions:
                self.positions[tp] = stored.get((tp.topic, tp.partition), 0)
            await self._take_up_stalls()
            self._assign()
            while not stop.is_set():
                if self.stalls:
                    await self._tend_stalls()
                records = await self._consumer.getmany(POLL_TIMEOUT_MS, POLL_MAX_RECORDS)
                if records:
                    await self._settle_with_retry(records, stop)
                if self._reassign:
                    self._assign()
                if self.projection.snapshot_due:
                    await self._snapshot()
            await self._snapshot()
        finally:
            await self._consumer.close()
            await self._deadletters.close()

    @property
    def _deadletters(self) -> LogProducer:
        if self._deadletters_producer is None:
            raise RuntimeError("the settlement runner is not running: it has no producer")
        return self._deadletters_producer

    def _assign(self) -> None:
        """Read every partition not stalled, each from where it is settled up to."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the settlement runner is not running: it has no consumer")
        reading = [tp for tp in self.partitions if tp not in self.stalls]
        consumer.assign(reading)
        for tp in reading:
            consumer.seek(tp, self.positions[tp])
        self._reassign = False

    async def _snapshot(self) -> None:
        """Store the projection's state (taken after its batch committed) to restart from.

        A snapshot only shortens restarts: if the database refuses it, settling goes on and
        the next one is tried later.
        """
        try:
            if self.projection.state.applied:
                await self.snapshots.save(self.projection.snapshot())
        except Exception:
            log.warning("settlement snapshot failed; settling goes on", exc_info=True)
            return
        self.projection.snapshot_taken()

    async def _settle_with_retry(self, records: list[LogRecord], stop: asyncio.Event) -> None:
        """Settle a batch: retried with backoff while the database is unreachable; with the
        database answering, settled in runs until a record fails alone, which stalls its
        partition (`_isolate`)."""
        delay = RETRY_INITIAL_S
        while True:
            records = [
                r for r in records if TopicPartition(r.topic, r.partition) not in self.stalls
            ]
            if not records:
                return
            try:
                await self._attempt(records)
                return
            except Exception as error:
                if stop.is_set():
                    raise
                failure = error
            try:
                if not await self._unreachable(failure):
                    await self._isolate(records)
                    return
            except Exception as error:
                if stop.is_set():
                    raise
                failure = error
            log.warning(
                "settling %d records failed (%s); retrying in %.1fs",
                len(records),
                _describe(failure),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _attempt(self, records: list[LogRecord]) -> None:
        """Settle records in one transaction, reloading the projection first if an attempt
        failed since it was loaded."""
        if self._reload:
            await self.projection.load(self.store, self.snapshots)
            self._reload = False
        try:
            await self._settle(records)
        except Exception:
            self._reload = True
            raise

    async def _unreachable(self, error: Exception) -> bool:
        """Whether a failure is the database being away (or busy), not the records."""
        if isinstance(error, DisconnectionError | InterfaceError | OSError | TimeoutError):
            return True
        if isinstance(error, DBAPIError) and (
            error.connection_invalidated or "database is locked" in str(error.orig)
        ):
            return True
        try:
            async with self.store.engine.connect() as connection:
                await connection.execute(select(1))
        except Exception:
            return True
        return False

    async def _isolate(self, records: list[LogRecord]) -> None:
        """Settle each partition's records in halves until a failing run is one record: that
        record cannot be applied, so its partition stalls there (everything before it
        settled); other partitions settle on. Raises if the database goes away meanwhile."""
        runs: dict[TopicPartition, list[LogRecord]] = {}
        for record in records:
            runs.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        for tp, run in runs.items():
            failed = await self._settle_until_failing(run)
            if failed is not None:
                await self._stall(tp, *failed)

    async def _settle_until_failing(
        self, run: list[LogRecord]
    ) -> tuple[LogRecord, Exception] | None:
        """Settle `run` in order up to the first record that fails alone; that record and
        its failure, or None if all settled."""
        try:
            await self._attempt(run)
            return None
        except Exception as error:
            if await self._unreachable(error):
                raise
            if len(run) == 1:
                return run[0], error
        half = len(run) // 2
        failed = await self._settle_until_failing(run[:half])
        if failed is not None:
            return failed
        return await self._settle_until_failing(run[half:])

    async def _stall(self, tp: TopicPartition, record: LogRecord, error: Exception) -> None:
        """Stop the partition at `record`, recorded durably; it is tried again later."""
        event_id, event_type = _identify(record)
        description = _describe(error)
        stall = await record_stall(
            self.store.engine,
            self.name,
            tp.topic,
            tp.partition,
            record.offset,
            event_id,
            event_type,
            description,
        )
        self._unsettled.pop(tp, None)
        self.stalls[tp] = stall
        self._stopped_at[tp] = record
        previous = self._retry_delay.get(tp)
        delay = STALL_RETRY_INITIAL_S if previous is None else min(previous * 2, STALL_RETRY_MAX_S)
        self._retry_delay[tp] = delay
        self._retry_at[tp] = asyncio.get_running_loop().time() + delay
        self._reassign = True
        report = log.error if stall.attempts == 1 else log.warning
        report(
            "settlement stopped %s at %s (%s %s; attempt %d): %s; the partition's later "
            "records wait, other partitions go on (cx status; cx deadletters set-aside %s)",
            tp,
            stall.source,
            event_type,
            event_id,
            stall.attempts,
            description,
            stall.source,
        )

    async def _take_up_stalls(self) -> None:
        """On start: close stalls a previous run got past; stop again at those an operator
        set aside (to carry that out); try the others' records again at once (a fixed release
        may apply them)."""
        for stall in await open_stalls(self.store.engine, self.name):
            tp = TopicPartition(stall.topic, stall.partition)
            if tp not in self.positions:
                continue
            if self.positions[tp] > stall.offset:
                await self._close_stall(stall, "set_aside" if stall.set_aside_by else "applied")
            elif self.positions[tp] == stall.offset and stall.set_aside_by is not None:
                self.stalls[tp] = stall
            else:
                self._unsettled[tp] = stall

    async def _tend_stalls(self) -> None:
        """While partitions are stalled (at most every STALL_CHECK_S): carry out an operator's
        decision to set a record aside, and try each other stalled record again when due."""
        now = asyncio.get_running_loop().time()
        if now < self._stalls_checked + STALL_CHECK_S:
            return
        self._stalls_checked = now
        try:
            decided = {
                TopicPartition(s.topic, s.partition): s
                for s in await open_stalls(self.store.engine, self.name)
            }
            for tp, stall in list(self.stalls.items()):
                current = decided.get(tp)
                if current is not None and current.offset == stall.offset:
                    stall = self.stalls[tp] = current
                if stall.set_aside_by is not None:
                    await self._set_aside(tp, stall)
                elif now >= self._retry_at.get(tp, 0.0):
                    del self.stalls[tp]
                    self._unsettled[tp] = stall
                    self._reassign = True
        except Exception:
            log.warning("reading the stalled partitions failed; trying later", exc_info=True)

    async def _set_aside(self, tp: TopicPartition, stall: Stall) -> None:
        """Send the stalled record to the dead-letter topic, and settle its partition on
        from the next record."""
        record = self._stopped_at.get(tp) or await self._read(tp, stall.offset)
        reason = f"set aside by {stall.set_aside_by}: {stall.set_aside_reason}; {stall.error}"
        await send_dead_letter(
            self._deadletters, self.topics.deadletters, record, self.name, reason
        )
        await self._deadletters.flush()
        after = stall.offset + 1
        await self.store.append([], offsets={(self.name, tp.topic, tp.partition): after})
        await self._close_stall(stall, "set_aside")
        log.warning("settlement set %s aside (%s); %s goes on", stall.source, reason, tp)
        async with self.settled:
            self.positions[tp] = after
            self.settled.notify_all()
        del self.stalls[tp]
        self._stopped_at.pop(tp, None)
        self._retry_delay.pop(tp, None)
        self._reassign = True

    async def _read(self, tp: TopicPartition, offset: int) -> LogRecord:
        """The record at `offset` of a partition (LogError if the log does not give it)."""
        consumer = await self.log.consumer()
        try:
            consumer.assign([tp])
            consumer.seek(tp, offset)
            for _ in range(READ_ATTEMPTS):
                for record in await consumer.getmany(1000, 1):
                    return record
        finally:
            await consumer.close()
        raise LogError(f"{tp} has no record at offset {offset}")

    async def _close_stall(self, stall: Stall, resolution: Resolution) -> None:
        async with writing(self.store.engine) as connection:
            await resolve(connection, stall, resolution)

    async def _settle(self, records: list[LogRecord]) -> None:
        new_events: list[NewEvent] = []
        decoded: dict[str, AnyEvent] = {}
        offsets: dict[OffsetKey, int] = {}
        for record in records:
            offsets[(self.name, record.topic, record.partition)] = record.offset + 1
            try:
                event = decode_event(record.value)
            except ValidationError as error:
                log.error("setting aside undecodable record %s: %s", source_of(record), error)
                await send_dead_letter(
                    self._deadletters, self.topics.deadletters, record, self.name, str(error)
                )
                continue
            new_events.append(to_new_event(event, record))
            decoded[event.event_id] = event
        # A dead letter is stored before the offset that passes its record is committed.
        await self._deadletters.flush()
        self.projection.decoded(decoded)
        await self.store.append(new_events, offsets=offsets, projector=self.projection)
        async with self.settled:
            for (_, topic, partition), offset in offsets.items():
                self.positions[TopicPartition(topic, partition)] = offset
            self.settled.notify_all()
        for tp, stall in list(self._unsettled.items()):
            if self.positions[tp] > stall.offset:
                await self._close_stall(stall, "applied")
                log.warning("settlement applied %s after all; %s goes on", stall.source, tp)
                del self._unsettled[tp]
                self._retry_delay.pop(tp, None)

    async def wait_settled(self, targets: Mapping[TopicPartition, int], timeout_s: float) -> None:
        """Wait until the events topic is settled up to `targets` (next offsets)."""
        async with asyncio.timeout(timeout_s), self.settled:
            await self.settled.wait_for(
                lambda: all(self.positions.get(tp, 0) >= end for tp, end in targets.items())
            )


def _identify(record: LogRecord) -> tuple[str | None, str | None]:
    """The event id and type a record names, as far as it can be read."""
    try:
        document = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    event_id, kind = document.get("event_id"), document.get("type")
    return (
        event_id if isinstance(event_id, str) else None,
        kind if isinstance(kind, str) else None,
    )


def _describe(error: BaseException) -> str:
    """The error's type and message, within ERROR_CHARS."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."
