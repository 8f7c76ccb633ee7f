"""Stalled partitions: where settlement stopped at an event it cannot apply, kept durably.

Settlement records here the record of a partition it could not apply even on its own, with
the database answering (`SettlementRunner`); nothing after it in that partition is applied
until the stall is over. Every process reads the table (health, `cx status`), and an operator
sets the record aside here (`cx deadletters set-aside`, `POST /v1/admin/set-aside`), which the
settlement process then carries out. A row stays as history once resolved: `applied` when the
record was applied after all (a fixed release, a repaired database), `set_aside` when it went
to the dead-letter topic instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Integer,
    PrimaryKeyConstraint,
    Row,
    Table,
    Text,
    and_,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from settlement.schema import metadata
from settlement.sql_store import writing

stalled_partitions = Table(
    "stalled_partitions",
    metadata,
    Column("stage", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", Text),
    Column("event_type", Text),
    Column("error", Text, nullable=False),
    Column("since_ms", BigInteger, nullable=False),
    Column("retried_ms", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("set_aside_by", Text),
    Column("set_aside_reason", Text),
    Column("resolved_ms", BigInteger),
    Column("resolution", Text),
    PrimaryKeyConstraint("stage", "topic", "partition", "offset", name="stalled_partitions_pkey"),
)
"""One row per record a stage stopped at; `resolved_ms` null while it still stops it."""

Resolution = Literal["applied", "set_aside"]


@dataclass(frozen=True, slots=True)
class Stall:
    """A partition a stage stopped at `offset`, the record it could not apply."""

    stage: str
    topic: str
    partition: int
    offset: int
    event_id: str | None
    event_type: str | None
    error: str
    since_ms: int
    """Wall-clock time of the first failure, ms."""
    retried_ms: int
    """Wall-clock time of the latest attempt, ms."""
    attempts: int
    set_aside_by: str | None
    """The operator who set the record aside (settlement then skips it), or None."""
    set_aside_reason: str | None
    resolved_ms: int | None = None
    """Wall-clock time the stall ended (applied, or its record set aside), ms; None while open."""

    @property
    def source(self) -> str:
        """`topic:partition:offset` of the record, as dead letters name their source."""
        return f"{self.topic}:{self.partition}:{self.offset}"


def wall_clock_ms() -> int:
    """Now, in ms since the epoch (stalls are an operator's matter, not the log's)."""
    return time.time_ns() // 1_000_000


def _stall(row: Row[tuple[object, ...]]) -> Stall:
    values = row._mapping
    return Stall(
        stage=values["stage"],
        topic=values["topic"],
        partition=values["partition"],
        offset=values["offset"],
        event_id=values["event_id"],
        event_type=values["event_type"],
        error=values["error"],
        since_ms=values["since_ms"],
        retried_ms=values["retried_ms"],
        attempts=values["attempts"],
        set_aside_by=values["set_aside_by"],
        set_aside_reason=values["set_aside_reason"],
        resolved_ms=values["resolved_ms"],
    )


def _key(stage: str, topic: str, partition: int, offset: int) -> ColumnElement[bool]:
    table = stalled_partitions
    return and_(
        table.c.stage == stage,
        table.c.topic == topic,
        table.c.partition == partition,
        table.c.offset == offset,
    )


async def open_stalls(engine: AsyncEngine, stage: str | None = None) -> list[Stall]:
    """The stalls not yet over (of one stage, or of all), by stage, topic and partition."""
    table = stalled_partitions
    query = select(table).where(table.c.resolved_ms.is_(None))
    if stage is not None:
        query = query.where(table.c.stage == stage)
    query = query.order_by(table.c.stage, table.c.topic, table.c.partition, table.c.offset)
    async with engine.connect() as connection:
        return [_stall(row) for row in await connection.execute(query)]


async def set_aside_stalls(engine: AsyncEngine) -> dict[str, Stall]:
    """The stalls whose record an operator set aside to the dead-letter topic, by source."""
    table = stalled_partitions
    query = select(table).where(table.c.resolution == "set_aside")
    async with engine.connect() as connection:
        return {stall.source: stall for stall in map(_stall, await connection.execute(query))}


async def record_stall(
    engine: AsyncEngine,
    stage: str,
    topic: str,
    partition: int,
    offset: int,
    event_id: str | None,
    event_type: str | None,
    error: str,
) -> Stall:
    """Record that the record at `offset` could not be applied (again): a new stall, or one
    more attempt at a known one, which keeps its first time and any operator's decision."""
    now = wall_clock_ms()
    table = stalled_partitions
    key = _key(stage, topic, partition, offset)
    async with writing(engine) as connection:
        known = (await connection.execute(select(table).where(key))).first()
        if known is None:
            await connection.execute(
                insert(table).values(
                    stage=stage,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    event_id=event_id,
                    event_type=event_type,
                    error=error,
                    since_ms=now,
                    retried_ms=now,
                    attempts=1,
                )
            )
        else:
            await connection.execute(
                update(table)
                .where(key)
                .values(
                    error=error,
                    retried_ms=now,
                    attempts=table.c.attempts + 1,
                    resolved_ms=None,
                    resolution=None,
                )
            )
        row = (await connection.execute(select(table).where(key))).one()
    return _stall(row)


async def set_aside(engine: AsyncEngine, source: str, operator: str, reason: str) -> Stall | None:
    """Mark the open stall at `source` (`topic:partition:offset`) to be set aside; None if no
    stall is open there. The stage carries it out: the record goes to the dead-letter topic
    and the partition goes on after it."""
    topic, partition, offset = _parse_source(source)
    table = stalled_partitions
    condition = and_(
        table.c.topic == topic,
        table.c.partition == partition,
        table.c.offset == offset,
        table.c.resolved_ms.is_(None),
    )
    async with writing(engine) as connection:
        await connection.execute(
            update(table).where(condition).values(set_aside_by=operator, set_aside_reason=reason)
        )
        row = (await connection.execute(select(table).where(condition))).first()
    return None if row is None else _stall(row)


async def resolve(connection: AsyncConnection, stall: Stall, resolution: Resolution) -> None:
    """Close a stall (inside the caller's transaction)."""
    key = _key(stall.stage, stall.topic, stall.partition, stall.offset)
    await connection.execute(
        update(stalled_partitions)
        .where(key)
        .where(stalled_partitions.c.resolved_ms.is_(None))
        .values(resolved_ms=wall_clock_ms(), resolution=resolution)
    )


def _parse_source(source: str) -> tuple[str, int, int]:
    """`topic:partition:offset` as its parts; ValueError saying what is wrong."""
    topic, _, rest = source.rpartition(":")
    topic, _, partition = topic.rpartition(":")
    if not topic or not partition.isdigit() or not rest.isdigit():
        raise ValueError(f"{source[:200]!r} is not topic:partition:offset")
    return topic, int(partition), int(rest)
