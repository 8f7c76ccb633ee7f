"""Moving events partitions (and so their families) between settlement shards, offline.

A shard layout is the list of shard stores, the home shard's first; partition P settles in
shard P mod N (`settlement.shards`). Going from one layout to another moves each partition
whose store changes: its events are appended to the new store in the order the old one
stored them (same event ids, new positions), with the partition's settled offset, and then
deleted from the old store. Each store that gained or lost events forgets its recorded
checkpoints and settlement snapshots (they hash the old split) and has its projections
rebuilt from its events. Every step is idempotent (an append skips event ids already stored,
a delete finds nothing the second time), so a move cut short is finished by running it again.

The proof that nothing was lost or changed is the merged history: its `history_hash`, which
does not depend on which shard holds a partition, is taken before and after.
(docs/DESIGN.md, "Settlement in shards".)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, delete, select

from exchange.domain.catalogue import Catalogue
from settlement.projections import SNAPSHOT_STAGE, checkpoints, rebuild
from settlement.replay import replay
from settlement.schema import consumer_offsets, events
from settlement.shards import MergedView, shard_of, viewing
from settlement.snapshots import snapshots
from settlement.sql_store import SqlEventStore, writing
from settlement.store import NewEvent

MOVE_BATCH = 2000
"""Events copied a transaction."""
CONSUMER = "settlement"


@dataclass
class Move:
    """One partition's events going from one shard to another."""

    partition: int
    source: int
    target: int
    events: int = 0


@dataclass
class MoveReport:
    """What moved, and the merged history's hash before and after (equal when nothing was
    lost, doubled or reordered within a partition)."""

    moves: list[Move] = field(default_factory=list)
    before: str = ""
    after: str = ""


async def history_hash(
    stores: Sequence[SqlEventStore], catalogue: Catalogue, partitions: int
) -> str:
    """The merged history's `ExchangeState.history_hash` (`partitions`: matching's)."""
    async with viewing(stores) as views:
        merged = MergedView(views)
        return (await replay(merged, catalogue, partitions=partitions)).state.history_hash()


async def move_partitions(
    old: Sequence[SqlEventStore],
    new: Sequence[SqlEventStore],
    topic: str,
    partitions: int,
    catalogue: Catalogue,
) -> MoveReport:
    """Move every partition of `topic` whose shard store differs between the layouts `old`
    and `new` (the same store object in both lists is the same shard). Settlement must be
    stopped in every shard meanwhile."""
    report = MoveReport(before=await history_hash(_distinct(old), catalogue, partitions))
    touched: list[SqlEventStore] = []
    for partition in range(partitions):
        source = old[shard_of(partition, len(old))]
        target = new[shard_of(partition, len(new))]
        if source is target:
            continue
        move = Move(partition, _index(source, old), _index(target, new))
        move.events = await _copy(source, target, topic, partition)
        await _drop(source, topic, partition)
        report.moves.append(move)
        touched += [s for s in (source, target) if not any(s is t for t in touched)]
    for store in touched:
        async with writing(store.engine) as connection:
            await connection.execute(delete(checkpoints))
            await connection.execute(delete(snapshots).where(snapshots.c.stage == SNAPSHOT_STAGE))
        await rebuild(store, catalogue, partitions)
    report.after = await history_hash(_distinct(new), catalogue, partitions)
    return report


def _of_partition(topic: str, partition: int) -> ColumnElement[bool]:
    return and_(
        events.c.metadata["topic"].as_string() == topic,
        events.c.metadata["partition"].as_integer() == partition,
    )


async def _copy(source: SqlEventStore, target: SqlEventStore, topic: str, partition: int) -> int:
    """Append the partition's events to `target` in `source`'s order, the settled offset with
    the last batch; how many events the partition has."""
    offset_key = (CONSUMER, topic, partition)
    stored = await source.consumer_offsets(CONSUMER)
    settled = stored.get((topic, partition))
    after, copied = 0, 0
    while True:
        async with source.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(events)
                    .where(_of_partition(topic, partition), events.c.position > after)
                    .order_by(events.c.position)
                    .limit(MOVE_BATCH)
                )
            ).all()
        batch = [
            NewEvent(
                event_id=row.event_id,
                stream_id=row.stream_id,
                type=row.type,
                data=dict(row.data),
                metadata=dict(row.metadata),
                schema_version=row.schema_version,
            )
            for row in rows
        ]
        last = len(rows) < MOVE_BATCH
        offsets = {offset_key: settled} if last and settled is not None else None
        await target.append(batch, offsets=offsets)
        copied += len(rows)
        if last:
            return copied
        after = rows[-1].position


async def _drop(source: SqlEventStore, topic: str, partition: int) -> None:
    """Delete the partition's events and settled offset from the shard it left."""
    async with writing(source.engine) as connection:
        await connection.execute(delete(events).where(_of_partition(topic, partition)))
        await connection.execute(
            delete(consumer_offsets).where(
                consumer_offsets.c.consumer == CONSUMER,
                consumer_offsets.c.topic == topic,
                consumer_offsets.c.partition == partition,
            )
        )


def _distinct(stores: Sequence[SqlEventStore]) -> list[SqlEventStore]:
    found: list[SqlEventStore] = []
    for store in stores:
        if not any(store is seen for seen in found):
            found.append(store)
    return found


def _index(store: SqlEventStore, layout: Sequence[SqlEventStore]) -> int:
    return next(k for k, s in enumerate(layout) if s is store)
