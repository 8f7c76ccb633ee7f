"""The event store contract on PostgreSQL: each test gets a database of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import make_url

from settlement.sql_store import PostgresEventStore, open_event_store
from tests.contract.event_store import EventStoreContract, StoreFactory, opened_stores

pytestmark = pytest.mark.postgres


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """URL of a new, empty database on the server, dropped after the test."""
    server = make_url(postgres_url)
    # asyncpg's own DSN has no "+asyncpg"; it runs each statement outside a transaction,
    # as CREATE/DROP DATABASE need.
    dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"test_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield server.set(database=name).render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    async def make_store(self, database_url: str) -> AsyncIterator[StoreFactory]:
        def open_store() -> PostgresEventStore:
            store = open_event_store(database_url)
            assert isinstance(store, PostgresEventStore)
            return store

        async with opened_stores(open_store) as make:
            yield make
