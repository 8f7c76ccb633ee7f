"""The migrations make the schema the tables describe, from nothing and from the previous
release, and processes starting at once migrate one after another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from cx.migrations import BASELINE, alembic_config, combined_metadata, head, upgrade_to_head
from settlement.schema import events
from settlement.sql_store import open_event_store
from tests.conftest import fresh_database
from tests.previous_release import create_previous_release, schema_of


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
        return
    async with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
async def other_database(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A second empty database of the same kind as `database`."""
    if database.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
        return
    async with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


def _differences(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), combined_metadata()))


async def _on(url: str, work: Any) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


async def test_autogenerate_finds_nothing_to_do_at_head(database: str) -> None:
    """A table changed without a migration fails here."""
    store = open_event_store(database)
    try:
        await store.initialise(upgrade_to_head)
    finally:
        await store.close()
    assert await _on(database, _differences) == []
    assert await _on(database, lambda c: MigrationContext.configure(c).get_current_revision()) == (
        head()
    )


async def test_the_baseline_is_the_schema_the_previous_release_made(
    database: str, other_database: str
) -> None:
    await create_previous_release(database, with_history=False)
    await _on(other_database, lambda c: command.upgrade(alembic_config(c), BASELINE))
    made_by_release = await _on(database, schema_of)
    made_by_baseline = await _on(other_database, schema_of)
    assert "events" in made_by_release
    assert made_by_baseline == made_by_release


async def test_a_database_the_previous_release_made_is_stamped_at_the_baseline(
    database: str,
) -> None:
    await create_previous_release(database, with_history=False)
    store = open_event_store(database)
    try:
        await store.initialise(upgrade_to_head)
        await store.initialise(upgrade_to_head)  # a second start finds nothing to do
    finally:
        await store.close()
    assert await _on(database, _differences) == []
    revisions = await _on(
        database,
        lambda c: c.execute(text("SELECT version_num FROM alembic_version")).scalars().all(),
    )
    assert revisions == [head()]


@pytest.mark.postgres
async def test_processes_starting_at_once_migrate_one_after_another(postgres_url: str) -> None:
    async with fresh_database(postgres_url) as url:
        stores = [open_event_store(url) for _ in range(4)]
        try:
            await asyncio.gather(*(store.initialise(upgrade_to_head) for store in stores))
        finally:
            for store in stores:
                await store.close()
        assert await _on(url, _differences) == []
        revisions = await _on(
            url, lambda c: c.execute(text("SELECT version_num FROM alembic_version")).all()
        )
        assert [tuple(r) for r in revisions] == [(head(),)]


async def test_registrations_settled_before_0004_are_folded_into_their_history(
    database: str,
) -> None:
    """A database that settled registrations under 0003 keeps every one of them, the replaced
    registration included, so its past purchases are invoiced to the enterprise that bought."""
    registrations = [
        ("b1", "杭州算力科技有限公司", "91330100716105852F", 1_000),
        ("b1", "杭州新壳公司", "91330100MA2AAAAAAA", 2_000),
        ("b2", "杭州算力科技有限公司", "91330100716105852F", 3_000),
    ]

    def settled_under_0003(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "0003")
        connection.execute(
            events.insert(),
            [
                {
                    "stream_id": "registry",
                    "stream_version": version,
                    "event_id": f"e{version}",
                    "type": "EnterpriseRegistered",
                    "schema_version": 1,
                    "data": {
                        "type": "EnterpriseRegistered",
                        "event_id": f"e{version}",
                        "ts": ts,
                        "account_id": account,
                        "name": name,
                        "uscc": uscc,
                        "kind": "sme",
                        "city": "hangzhou",
                    },
                    "metadata": {},
                }
                for version, (account, name, uscc, ts) in enumerate(registrations)
            ],
        )

    await _on(database, settled_under_0003)
    store = open_event_store(database)
    try:
        await store.initialise(upgrade_to_head)
    finally:
        await store.close()
    history = await _on(
        database,
        lambda c: c.execute(
            text(
                "SELECT account_id, name, uscc, registered_ts FROM enterprise_registrations"
                " ORDER BY position"
            )
        ).all(),
    )
    assert [tuple(row) for row in history] == registrations


async def test_blocks_settled_before_0005_get_their_hours_and_group(database: str) -> None:
    """A database that settled blocks under 0004 (their family as symbol, no hours) shows each
    block's hourly contracts and its exclusive group after 0005, from the stored events; a
    single order keeps none."""
    hours = ["H100-80G.GZ.20271201T09", "H100-80G.GZ.20271201T10"]
    blocks = [("o-block", None), ("o-alternative", "o-group")]

    def settled_under_0004(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "0004")
        connection.execute(
            events.insert(),
            [
                {
                    "stream_id": "orders",
                    "stream_version": version,
                    "event_id": f"e{version}",
                    "type": "BlockAccepted",
                    "schema_version": 1,
                    "data": {
                        "type": "BlockAccepted",
                        "order_id": order_id,
                        "symbols": hours,
                        "family": "H100-80G.GZ",
                        "group": group,
                    },
                    "metadata": {},
                }
                for version, (order_id, group) in enumerate(blocks)
            ],
        )
        for order_id, symbol in (*((b, "H100-80G.GZ") for b, _ in blocks), ("o-one", hours[0])):
            connection.execute(
                text(
                    "INSERT INTO orders (order_id, account_id, symbol, side, price, quantity,"
                    " filled, status, reason, client_order_id, created_ts, updated_ts) VALUES"
                    " (:order_id, 'lab', :symbol, 'buy', 1000, 2, 0, 'open', NULL, NULL, 1, 1)"
                ),
                {"order_id": order_id, "symbol": symbol},
            )

    await _on(database, settled_under_0004)
    store = open_event_store(database)
    try:
        await store.initialise(upgrade_to_head)
    finally:
        await store.close()
    rows = await _on(
        database,
        lambda c: c.execute(
            text("SELECT order_id, symbols, group_id FROM orders ORDER BY order_id")
        ).all(),
    )
    assert [tuple(row) for row in rows] == [
        ("o-alternative", ",".join(hours), "o-group"),
        ("o-block", ",".join(hours), None),
        ("o-one", None, None),
    ]
