"""The ledger projection: balances, positions, orders and trades, kept in the append transaction.

The money arithmetic is `exchange.domain.accounts.Accounts`, the same rules the risk stage uses.
The projection keeps the accounts in memory (loaded from its tables at start), applies each
newly stored event, and writes the rows it changed in the transaction that stores the events,
so the tables always match the events up to the same position.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Table,
    Text,
    bindparam,
    case,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exchange.domain.accounts import Accounts, OpenOrder
from exchange.domain.messages import (
    AnyEvent,
    CapacityDeposited,
    FundsDeposited,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    TradeExecuted,
    event_from_dict,
)
from settlement.schema import metadata
from settlement.store import StoredEvent

cash_balances = Table(
    "cash_balances",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("available", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
)

capacity_balances = Table(
    "capacity_balances",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("symbol", Text, primary_key=True),
    Column("available", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
)

positions = Table(
    "positions",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("symbol", Text, primary_key=True),
    Column("quantity", BigInteger, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("account_id", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("filled", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("client_order_id", Text),
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Index("orders_account_idx", "account_id", "created_ts"),
)

trades = Table(
    "trades",
    metadata,
    Column("trade_id", Text, primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("buy_order_id", Text, nullable=False),
    Column("sell_order_id", Text, nullable=False),
    Column("buyer_id", Text, nullable=False),
    Column("seller_id", Text, nullable=False),
    Column("aggressor", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Index("trades_symbol_idx", "symbol", "position"),
)

_FILL = (
    update(orders)
    .where(orders.c.order_id == bindparam("b_order_id"))
    .values(
        filled=orders.c.filled + bindparam("b_quantity"),
        status=case(
            (orders.c.filled + bindparam("b_quantity") >= orders.c.quantity, "filled"),
            else_=orders.c.status,
        ),
        updated_ts=bindparam("b_ts"),
    )
)
_CANCEL = (
    update(orders)
    .where(orders.c.order_id == bindparam("b_order_id"))
    .values(status="cancelled", reason=bindparam("b_reason"), updated_ts=bindparam("b_ts"))
)


def _insert(connection: AsyncConnection, table: Table) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


async def _upsert(
    connection: AsyncConnection, table: Table, keys: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    statement = _insert(connection, table)
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys},
    )
    await connection.execute(statement, rows)


class LedgerProjection:
    """Projects events into balances, positions, orders and trades."""

    def __init__(self) -> None:
        self.accounts = Accounts()

    async def load(self, engine: AsyncEngine) -> None:
        """Rebuild the in-memory accounts from the projection's tables."""
        accounts = Accounts()
        async with engine.connect() as connection:
            for row in await connection.execute(select(cash_balances)):
                balance = accounts.cash_of(row.account_id)
                balance.available, balance.held = row.available, row.held
            for row in await connection.execute(select(capacity_balances)):
                balance = accounts.capacity_of(row.account_id, row.symbol)
                balance.available, balance.held = row.available, row.held
            for row in await connection.execute(select(positions)):
                accounts.positions[(row.account_id, row.symbol)] = row.quantity
            open_rows = await connection.execute(select(orders).where(orders.c.status == "open"))
            for row in open_rows:
                accounts.open_orders[row.order_id] = OpenOrder(
                    row.order_id,
                    row.account_id,
                    row.symbol,
                    row.side,
                    row.price,
                    row.quantity - row.filled,
                )
        self.accounts = accounts

    async def __call__(self, connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        """Apply newly stored events and write the rows they change."""
        dirty_cash: set[str] = set()
        dirty_capacity: set[tuple[str, str]] = set()
        dirty_positions: set[tuple[str, str]] = set()
        new_orders: list[dict[str, Any]] = []
        rejected_orders: list[dict[str, Any]] = []
        new_trades: list[dict[str, Any]] = []
        fills: list[dict[str, Any]] = []
        cancels: list[dict[str, Any]] = []
        for stored in events:
            event: AnyEvent = event_from_dict(stored.data)
            if isinstance(event, FundsDeposited | CapacityDeposited):
                self.accounts.apply_deposit(event)
                if isinstance(event, FundsDeposited):
                    dirty_cash.add(event.account_id)
                else:
                    dirty_capacity.add((event.account_id, event.symbol))
            elif isinstance(event, OrderAccepted):
                self.accounts.hold(event)
                if event.side == "buy":
                    dirty_cash.add(event.account_id)
                else:
                    dirty_capacity.add((event.account_id, event.symbol))
                new_orders.append(_order_row(event, "open", None))
            elif isinstance(event, OrderRejected):
                rejected_orders.append(_order_row(event, "rejected", event.reason.value))
            elif isinstance(event, TradeExecuted):
                self.accounts.apply_trade(event)
                dirty_cash.update((event.buyer_id, event.seller_id))
                dirty_capacity.add((event.seller_id, event.symbol))
                dirty_positions.add((event.buyer_id, event.symbol))
                new_trades.append(_trade_row(event, stored.position))
                for order_id in (event.buy_order_id, event.sell_order_id):
                    fills.append(
                        {"b_order_id": order_id, "b_quantity": event.quantity, "b_ts": event.ts}
                    )
            elif isinstance(event, OrderCancelled):
                self.accounts.release(event)
                if event.side == "buy":
                    dirty_cash.add(event.account_id)
                else:
                    dirty_capacity.add((event.account_id, event.symbol))
                cancels.append(
                    {"b_order_id": event.order_id, "b_reason": event.reason.value, "b_ts": event.ts}
                )
        await self._write(connection, dirty_cash, dirty_capacity, dirty_positions)
        if new_orders:
            await connection.execute(_insert(connection, orders), new_orders)
        if rejected_orders:
            # A rejected duplicate reuses an existing order id; the original row stays.
            statement = _insert(connection, orders).on_conflict_do_nothing()
            await connection.execute(statement, rejected_orders)
        if new_trades:
            await connection.execute(_insert(connection, trades), new_trades)
        if fills:
            await connection.execute(_FILL, fills)
        if cancels:
            await connection.execute(_CANCEL, cancels)

    async def _write(
        self,
        connection: AsyncConnection,
        cash: Iterable[str],
        capacity: Iterable[tuple[str, str]],
        held_positions: Iterable[tuple[str, str]],
    ) -> None:
        accounts = self.accounts
        await _upsert(
            connection,
            cash_balances,
            ("account_id",),
            [
                {"account_id": a, "available": b.available, "held": b.held}
                for a in sorted(cash)
                for b in (accounts.cash_of(a),)
            ],
        )
        await _upsert(
            connection,
            capacity_balances,
            ("account_id", "symbol"),
            [
                {"account_id": a, "symbol": s, "available": b.available, "held": b.held}
                for a, s in sorted(capacity)
                for b in (accounts.capacity_of(a, s),)
            ],
        )
        await _upsert(
            connection,
            positions,
            ("account_id", "symbol"),
            [
                {"account_id": a, "symbol": s, "quantity": accounts.positions.get((a, s), 0)}
                for a, s in sorted(held_positions)
            ],
        )


def _order_row(
    event: OrderAccepted | OrderRejected, status: str, reason: str | None
) -> dict[str, Any]:
    return {
        "order_id": event.order_id,
        "account_id": event.account_id,
        "symbol": event.symbol,
        "side": event.side,
        "price": event.price,
        "quantity": event.quantity,
        "filled": 0,
        "status": status,
        "reason": reason,
        "client_order_id": event.client_order_id,
        "created_ts": event.ts,
        "updated_ts": event.ts,
    }


def _trade_row(event: TradeExecuted, position: int) -> dict[str, Any]:
    return {
        "trade_id": event.trade_id,
        "position": position,
        "symbol": event.symbol,
        "price": event.price,
        "quantity": event.quantity,
        "buy_order_id": event.buy_order_id,
        "sell_order_id": event.sell_order_id,
        "buyer_id": event.buyer_id,
        "seller_id": event.seller_id,
        "aggressor": event.aggressor,
        "ts": event.ts,
    }
