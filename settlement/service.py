"""The settlement stage: stores every event exactly once, with the ledger, in PostgreSQL or SQLite.

It follows aiokafka's documented sink pattern instead of Kafka transactions: each batch of
events, the next offsets of the partitions it came from and the projection's rows are written
in one database transaction, and on start the consumer seeks to the stored offsets. A batch
that fails is retried with backoff after reloading the projection, since its in-memory state
may hold the failed batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

import orjson
from pydantic import ValidationError

from exchange.deadletters import send_dead_letter, source_of
from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import ALL_CONTRACTS, AnyEvent, decode_event
from exchange.log import CommandLog, LogProducer, LogRecord, TopicPartition
from exchange.pipeline import POLL_MAX_RECORDS, POLL_TIMEOUT_MS, Topics
from settlement.projections import LedgerProjection
from settlement.snapshots import SnapshotStore
from settlement.sql_store import SqlEventStore
from settlement.store import NewEvent, OffsetKey

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.1
RETRY_MAX_S = 5.0


def stream_of(event: AnyEvent) -> str:
    """The stream an event belongs to: its contract, else its account, else the exchange
    (market-wide controls)."""
    symbol = getattr(event, "symbol", None)
    if isinstance(symbol, str) and symbol != ALL_CONTRACTS:
        return f"contract-{symbol}"
    account_id = getattr(event, "account_id", None)
    if isinstance(account_id, str):
        return f"account-{account_id}"
    return "exchange"


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
    ) -> None:
        self.log = command_log
        self.store = store
        self.snapshots = SnapshotStore(store.engine)
        self.projection = LedgerProjection(catalogue)
        self.topics = topics
        self._deadletters_producer: LogProducer | None = None
        chosen = range(topics.market_partitions) if partitions is None else partitions
        self.partitions = [TopicPartition(topics.events, p) for p in chosen]
        self.settled = asyncio.Condition()
        self.positions: dict[TopicPartition, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Settle until `stop` is set."""
        await self.projection.load(self.store, self.snapshots)
        stored = await self.store.consumer_offsets(self.name)
        consumer = await self.log.consumer()
        self._deadletters_producer = await self.log.producer()
        try:
            consumer.assign(self.partitions)
            for tp in self.partitions:
                offset = stored.get((tp.topic, tp.partition), 0)
                consumer.seek(tp, offset)
                self.positions[tp] = offset
            while not stop.is_set():
                records = await consumer.getmany(POLL_TIMEOUT_MS, POLL_MAX_RECORDS)
                if records:
                    await self._settle_with_retry(records, stop)
                if self.projection.snapshot_due:
                    await self._snapshot()
            await self._snapshot()
        finally:
            await consumer.close()
            await self._deadletters.close()

    @property
    def _deadletters(self) -> LogProducer:
        assert self._deadletters_producer is not None, "the runner is not running"
        return self._deadletters_producer

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
        """Settle a batch, retrying with backoff until the database takes it.

        After a failed attempt the projection may hold the batch it could not store, so each
        retry first reloads it; a reload that fails (the database is still away) is retried
        the same way.
        """
        delay = RETRY_INITIAL_S
        reload = False
        while True:
            try:
                if reload:
                    await self.projection.load(self.store, self.snapshots)
                    reload = False
                await self._settle(records)
                return
            except Exception:
                if stop.is_set():
                    raise
                log.exception("settling %d records failed; retrying in %.1fs", len(records), delay)
                reload = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

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

    async def wait_settled(self, targets: Mapping[TopicPartition, int], timeout_s: float) -> None:
        """Wait until the events topic is settled up to `targets` (next offsets)."""
        async with asyncio.timeout(timeout_s), self.settled:
            await self.settled.wait_for(
                lambda: all(self.positions.get(tp, 0) >= end for tp, end in targets.items())
            )
