"""The snapshot port's adapter: snapshots kept in the event store's database (SQLite or
PostgreSQL), the latest few per partition."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.snapshots import Snapshot, SnapshotStore, SnapshotStoreUnavailable
from settlement.schema import utc_now

KEEP_PER_PARTITION = 3

metadata = MetaData()
"""The snapshots table."""

snapshots = Table(
    "snapshots",
    metadata,
    Column("stage", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("input_offset", BigInteger, nullable=False),
    Column("state_hash", Text, nullable=False),
    Column("data", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False, server_default=utc_now()),
    PrimaryKeyConstraint("stage", "topic", "partition", "input_offset", name="snapshots_pkey"),
)


class SqlSnapshotStore(SnapshotStore):
    """Snapshots in the `snapshots` table; keeps the latest KEEP_PER_PARTITION per partition."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def save(self, snapshot: Snapshot) -> None:
        """Store a snapshot (a second one at the same offset is the same state: kept once);
        SnapshotStoreUnavailable when the database refuses or drops the connection (it is
        away, or its standby is being promoted and is read-only yet)."""
        try:
            await self._save(snapshot)
        except (DBAPIError, OSError, TimeoutError) as error:
            raise SnapshotStoreUnavailable(f"snapshot not saved: {error}") from error

    async def _save(self, snapshot: Snapshot) -> None:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        row = {
            "stage": snapshot.stage,
            "topic": snapshot.topic,
            "partition": snapshot.partition,
            "input_offset": snapshot.input_offset,
            "state_hash": snapshot.state_hash,
            "data": snapshot.data,
        }
        async with self.engine.begin() as connection:
            await connection.execute(dialect.insert(snapshots).on_conflict_do_nothing(), [row])
            kept = (
                select(snapshots.c.input_offset)
                .where(*self._of(snapshot.stage, snapshot.topic, snapshot.partition))
                .order_by(snapshots.c.input_offset.desc())
                .limit(KEEP_PER_PARTITION)
            )
            await connection.execute(
                delete(snapshots).where(
                    *self._of(snapshot.stage, snapshot.topic, snapshot.partition),
                    snapshots.c.input_offset.not_in(kept.scalar_subquery()),
                )
            )

    async def latest(
        self, stage: str, topic: str, partition: int, at_most: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot of a partition, not past `at_most` if given."""
        query = select(snapshots).where(*self._of(stage, topic, partition))
        if at_most is not None:
            query = query.where(snapshots.c.input_offset <= at_most)
        query = query.order_by(snapshots.c.input_offset.desc()).limit(1)
        async with self.engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        return Snapshot(
            row.stage, row.topic, row.partition, row.input_offset, row.state_hash, row.data
        )

    @staticmethod
    def _of(stage: str, topic: str, partition: int) -> tuple[Any, ...]:
        return (
            snapshots.c.stage == stage,
            snapshots.c.topic == topic,
            snapshots.c.partition == partition,
        )
