"""The ledger projection writes the same tables whatever the size of the batches it is given.

PostgreSQL writes a batch's rows with one statement per table, a batch's fills, amends and
cancels of one order combined first; SQLite writes them row by row. A seeded market's history
(orders filled several times, amended and cancelled within one batch) is settled once in large
batches and once in small ones, on each database; every projection table must come out equal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from cx.migrations import upgrade_to_head
from exchange.domain.catalogue import default_catalogue
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    AmendOrder,
    CancelOrder,
    DepositCapacity,
    DepositFunds,
    Event,
    EventStamp,
    OrderAmended,
    OrderCancelled,
    PlaceOrder,
    TradeExecuted,
    decode_event,
    encode,
    exchange_order_id,
)
from exchange.domain.risk import RiskStage
from settlement.bench import HISTORY_PARTITIONS, make_history
from settlement.projections import (
    LedgerProjection,
    capacity_balances,
    cash_balances,
    invoice_lines,
    journal,
    ledger_balances,
    orders,
    positions,
    trades,
)
from settlement.service import stream_of
from settlement.sql_store import SqlEventStore, open_event_store
from settlement.store import NewEvent
from tests.conftest import fresh_database

TABLES = (
    orders,
    trades,
    cash_balances,
    capacity_balances,
    positions,
    journal,
    ledger_balances,
    invoice_lines,
)

StoreAt = Callable[[str], AbstractAsyncContextManager[SqlEventStore]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreAt:
    """Opens a fresh store by name: a SQLite file, or a new database on the PostgreSQL server."""

    @asynccontextmanager
    async def opened(name: str) -> AsyncIterator[SqlEventStore]:
        if request.param == "sqlite":
            store = open_event_store(f"sqlite+aiosqlite:///{tmp_path / name}.db")
            yield store
            await store.close()
            return
        async with fresh_database(request.getfixturevalue("postgres_url")) as url:
            store = open_event_store(url)
            yield store
            await store.close()

    return opened


async def _settled_tables(
    store: SqlEventStore, history: list[Event], batch: int
) -> dict[str, list[tuple[object, ...]]]:
    """Every projection table's rows after settling `history` in batches of `batch` events."""
    await store.initialise(upgrade_to_head)
    projection = LedgerProjection(default_catalogue(), partitions=HISTORY_PARTITIONS)
    for first in range(0, len(history), batch):
        # Decoded from the wire, as settlement reads them.
        events = [decode_event(encode(event)) for event in history[first : first + batch]]
        projection.decoded({event.event_id: event for event in events})
        new_events = [
            NewEvent(event.event_id, stream_of(event), event.type, orjson.loads(encode(event)))
            for event in events
        ]
        await store.append(new_events, projector=projection)
    tables: dict[str, list[tuple[object, ...]]] = {}
    async with store.engine.connect() as connection:
        for table in TABLES:
            rows = await connection.execute(select(table).order_by(*table.primary_key.columns))
            tables[table.name] = [tuple(row) for row in rows]
    return tables


async def test_large_and_small_batches_project_the_same_rows(open_store: StoreAt) -> None:
    history = make_history(4000, seed=3)
    async with open_store("large") as store:
        large = await _settled_tables(store, history, batch=len(history))
    async with open_store("small") as store:
        small = await _settled_tables(store, history, batch=9)

    assert large == small
    statuses = {row[7] for row in large["orders"]}
    assert {"open", "filled", "cancelled"} <= statuses


def _amended_filled_and_cancelled() -> list[Event]:
    """A sell of 10 amended down to 6 (keeping its place), 4 of it bought, the rest cancelled,
    through the real risk and matching stages: every change to the sell's row in one batch."""
    catalogue = default_catalogue()
    symbol = catalogue.symbols[0]
    price = 1000 * {spec.symbol: spec.tick_size for spec in catalogue}[symbol]
    risk, market = RiskStage(catalogue), MarketStage(catalogue)
    history: list[Event] = []
    commands: list[Any] = [
        DepositFunds(deposit_id="f1", account_id="buyer", amount=10**12),
        DepositCapacity(deposit_id="c1", account_id="seller", symbol=symbol, quantity=100),
        PlaceOrder(
            order_id="s1", account_id="seller", symbol=symbol, side="sell", price=price, quantity=10
        ),
        AmendOrder(order_id="s1", account_id="seller", quantity=6),
        PlaceOrder(
            order_id="b1", account_id="buyer", symbol=symbol, side="buy", price=price, quantity=4
        ),
        CancelOrder(order_id="s1", account_id="seller"),
    ]
    for offset, command in enumerate(commands, start=1):
        stamp = EventStamp("test.commands", 0, offset, 1_800_000_000_000 + offset)
        decided = risk.handle(command, stamp)
        history.append(decided)
        outcomes = market.handle(decided, EventStamp("test.orders", 0, offset, stamp.ts))
        history.extend(outcomes)
        for outcome in outcomes:
            if isinstance(outcome, TradeExecuted | OrderCancelled):
                risk.apply_outcome(outcome, lambda _: True, stamp)
    return history


async def test_an_order_accepted_changed_and_finished_in_one_batch_is_written_as_one_by_one(
    open_store: StoreAt,
) -> None:
    history = _amended_filled_and_cancelled()
    assert {OrderAmended, TradeExecuted, OrderCancelled} <= {type(e) for e in history}
    async with open_store("one-batch") as store:
        together = await _settled_tables(store, history, batch=len(history))
    async with open_store("one-by-one") as store:
        apart = await _settled_tables(store, history, batch=1)

    assert together == apart
    rows = {row[0]: row for row in together["orders"]}
    seller = exchange_order_id("seller", "s1")
    buyer = exchange_order_id("buyer", "b1")
    # (quantity, filled, status, reason): the amend took 4 off the sell's 10.
    assert rows[seller][5:9] == (6, 4, "cancelled", "requested")
    assert rows[buyer][5:8] == (4, 4, "filled")
