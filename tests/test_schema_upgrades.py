"""Tables an earlier release created are brought up to date by `initialise()`, keeping rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Index, MetaData, Table, insert, inspect, select

from settlement import projections
from settlement.sql_store import SqlEventStore, open_event_store
from tests.conftest import fresh_database

TRADE = {
    "trade_id": "H100-80G.GZ.20271201T00:1",
    "position": 7,
    "symbol": "H100-80G.GZ.20271201T00",
    "price": 1750,
    "quantity": 1,
    "buy_order_id": "b1",
    "sell_order_id": "s1",
    "buyer_id": "b",
    "seller_id": "p",
    "aggressor": "buy",
    "ts": 1,
}


def _trades_as_first_released() -> Table:
    """`trades` as releases before auction trades settled created it: aggressor NOT NULL."""
    earlier = MetaData()
    columns = [
        Column(
            c.name,
            c.type,
            primary_key=c.primary_key,
            nullable=c.nullable and c.name != "aggressor",
        )
        for c in projections.trades.columns
    ]
    return Table("trades", earlier, *columns, Index("trades_symbol_idx", "symbol", "position"))


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
        return
    async with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


async def test_an_old_trades_table_takes_auction_trades_after_initialise(database: str) -> None:
    old = open_event_store(database)
    async with old.engine.begin() as connection:
        earlier = _trades_as_first_released()
        await connection.run_sync(earlier.metadata.create_all)
        await connection.execute(insert(earlier), [TRADE])
    await old.close()

    store: SqlEventStore = open_event_store(database)
    try:
        await store.initialise()
        await store.initialise()  # a second start finds nothing to change
        auction_trade = {**TRADE, "trade_id": f"{TRADE['symbol']}:2", "aggressor": None}
        async with store.engine.begin() as connection:
            await connection.execute(insert(projections.trades), [auction_trade])
        async with store.engine.connect() as connection:
            rows = (await connection.execute(select(projections.trades))).mappings().all()
            indexes = await connection.run_sync(
                lambda sync: [i["name"] for i in inspect(sync).get_indexes("trades")]
            )
        assert sorted((dict(r) for r in rows), key=lambda r: r["trade_id"]) == [
            TRADE,
            auction_trade,
        ]
        assert indexes == ["trades_symbol_idx"]
    finally:
        await store.close()
