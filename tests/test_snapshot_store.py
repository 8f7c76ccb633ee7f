"""The snapshot store contract on SQLite and PostgreSQL, and how many the SQL adapter keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from cx.migrations import upgrade_to_head
from exchange.snapshots import SnapshotStore, SnapshotStoreUnavailable
from settlement.snapshots import KEEP_PER_PARTITION, SqlSnapshotStore
from settlement.sql_store import open_event_store
from tests.contract.snapshot_store import SnapshotStoreContract, taken


async def _sql_snapshots(url: str) -> AsyncIterator[SqlSnapshotStore]:
    store = open_event_store(url)
    try:
        await store.initialise(upgrade_to_head)
        yield SqlSnapshotStore(store.engine)
    finally:
        await store.close()


class TestSqliteSnapshotStore(SnapshotStoreContract):
    @pytest.fixture
    async def snapshots(self, tmp_path: Path) -> AsyncIterator[SnapshotStore]:
        async for snapshots in _sql_snapshots(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"):
            yield snapshots

    async def test_only_the_newest_few_are_kept(self, snapshots: SnapshotStore) -> None:
        newest = KEEP_PER_PARTITION + 2
        for offset in range(1, newest + 1):
            await snapshots.save(taken(offset))
        oldest_kept = newest - KEEP_PER_PARTITION + 1
        assert await snapshots.latest("risk", "t", 0, at_most=oldest_kept) == taken(oldest_kept)
        assert await snapshots.latest("risk", "t", 0, at_most=oldest_kept - 1) is None


@pytest.mark.postgres
class TestPostgresSnapshotStore(SnapshotStoreContract):
    @pytest.fixture
    async def snapshots(self, database_url: str) -> AsyncIterator[SnapshotStore]:
        async for snapshots in _sql_snapshots(database_url):
            yield snapshots


async def test_a_database_out_of_reach_is_reported_as_unavailable() -> None:
    # Nothing listens on port 9: as when the primary is gone and no standby is promoted yet.
    engine = create_async_engine("postgresql+asyncpg://exchange@127.0.0.1:9/exchange")
    try:
        with pytest.raises(SnapshotStoreUnavailable, match="snapshot not saved"):
            await SqlSnapshotStore(engine).save(taken(1))
    finally:
        await engine.dispose()
