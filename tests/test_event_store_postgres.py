"""The event store contract on PostgreSQL: each test gets a database of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from settlement.sql_store import PostgresEventStore, open_event_store
from tests.contract.event_store import EventStoreContract, StoreFactory, opened_stores

pytestmark = pytest.mark.postgres


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    async def make_store(self, database_url: str) -> AsyncIterator[StoreFactory]:
        def open_store() -> PostgresEventStore:
            store = open_event_store(database_url)
            assert isinstance(store, PostgresEventStore)
            return store

        async with opened_stores(open_store) as make:
            yield make
