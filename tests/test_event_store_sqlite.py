"""The event store contract on SQLite, plus what only the SQLite adapter does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cx.migrations import upgrade_to_head
from settlement.sql_store import (
    PostgresEventStore,
    SqliteEventStore,
    open_event_store,
)
from tests.contract.event_store import EventStoreContract, StoreFactory, new, opened_stores


class TestSqliteEventStore(EventStoreContract):
    @pytest.fixture
    async def make_store(self, tmp_path: Path) -> AsyncIterator[StoreFactory]:
        url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"

        def open_store() -> SqliteEventStore:
            store = open_event_store(url)
            assert isinstance(store, SqliteEventStore)
            return store

        async with opened_stores(open_store) as make:
            yield make

    async def test_the_database_is_in_wal_mode(self, store: SqliteEventStore) -> None:
        async with store.engine.connect() as connection:
            assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"


async def test_a_plain_path_opens_the_same_database(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    by_path = SqliteEventStore(path)
    await by_path.initialise(upgrade_to_head)
    await by_path.append([new("e1", "s")])
    await by_path.close()

    by_url = open_event_store(f"sqlite+aiosqlite:///{path}")
    try:
        assert [e.event_id for e in await by_url.read_all()] == ["e1"]
    finally:
        await by_url.close()


def test_the_url_scheme_picks_the_adapter() -> None:
    assert isinstance(open_event_store("postgresql+asyncpg://u@h/db"), PostgresEventStore)
    with pytest.raises(ValueError, match="unsupported event store URL"):
        open_event_store("mysql+aiomysql://u@h/db")
