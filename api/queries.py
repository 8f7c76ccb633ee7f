"""Reads of the settled state (the ledger projection's tables) for the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.domain.catalogue import strip_hours
from exchange.domain.messages import AnyEvent, event_from_dict
from settlement import projections as tables
from settlement.schema import events
from settlement.service import day_ahead_stream


async def contract_trades(engine: AsyncEngine, symbol: str, limit: int) -> list[dict[str, Any]]:
    """Settled trades of one contract, newest first."""
    query = (
        select(tables.trades)
        .where(tables.trades.c.symbol == symbol)
        .order_by(tables.trades.c.position.desc())
        .limit(limit)
    )
    async with engine.connect() as connection:
        rows = await connection.execute(query)
        return [dict(row._mapping) for row in rows]


async def account_orders(
    engine: AsyncEngine, account_id: str, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """An account's orders, newest first, optionally of one status."""
    query = select(tables.orders).where(tables.orders.c.account_id == account_id)
    if status is not None:
        query = query.where(tables.orders.c.status == status)
    query = query.order_by(tables.orders.c.created_ts.desc(), tables.orders.c.order_id).limit(limit)
    async with engine.connect() as connection:
        rows = await connection.execute(query)
        return [dict(row._mapping) for row in rows]


async def account_summary(engine: AsyncEngine, account_id: str) -> dict[str, Any] | None:
    """Cash, the delivery bonds it posted, capacity and positions of an account; None if it
    has no settled history."""
    async with engine.connect() as connection:
        cash = (
            await connection.execute(
                select(tables.cash_balances).where(tables.cash_balances.c.account_id == account_id)
            )
        ).first()
        capacity = (
            await connection.execute(
                select(tables.capacity_balances)
                .where(tables.capacity_balances.c.account_id == account_id)
                .order_by(tables.capacity_balances.c.symbol)
            )
        ).all()
        held = (
            await connection.execute(
                select(tables.positions)
                .where(tables.positions.c.account_id == account_id)
                .order_by(tables.positions.c.symbol)
            )
        ).all()
        bonds = (
            await connection.execute(
                select(tables.ledger_balances.c.balance).where(
                    tables.ledger_balances.c.account == f"bond:{account_id}"
                )
            )
        ).scalar()
    if cash is None and not capacity and not held and not bonds:
        return None
    return {
        "account_id": account_id,
        "cash": {
            "available": 0 if cash is None else cash.available,
            "held": 0 if cash is None else cash.held,
        },
        "bonds": bonds or 0,
        "capacity": [
            {"symbol": row.symbol, "available": row.available, "held": row.held} for row in capacity
        ],
        "positions": [{"symbol": row.symbol, "quantity": row.quantity} for row in held],
    }


async def order(engine: AsyncEngine, order_id: str) -> dict[str, Any] | None:
    """One settled order, if it is settled."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(tables.orders).where(tables.orders.c.order_id == order_id)
            )
        ).first()
    return None if row is None else dict(row._mapping)


async def group_orders(engine: AsyncEngine, group_id: str) -> list[dict[str, Any]]:
    """The settled alternatives of an exclusive group, by order id."""
    orders = tables.orders
    query = select(orders).where(orders.c.group_id == group_id).order_by(orders.c.order_id)
    async with engine.connect() as connection:
        return [dict(row._mapping) for row in await connection.execute(query)]


async def account_fills(engine: AsyncEngine, account_id: str, limit: int) -> list[dict[str, Any]]:
    """The account's sides of settled trades, newest first."""
    trades = tables.trades
    query = (
        select(trades)
        .where((trades.c.buyer_id == account_id) | (trades.c.seller_id == account_id))
        .order_by(trades.c.position.desc())
        .limit(limit)
    )
    fills: list[dict[str, Any]] = []
    async with engine.connect() as connection:
        for row in await connection.execute(query):
            # A self-trade is two fills: one of each side.
            for side in ("buy", "sell"):
                if (row.buyer_id if side == "buy" else row.seller_id) != account_id:
                    continue
                fills.append(
                    {
                        "trade_id": row.trade_id,
                        "order_id": row.buy_order_id if side == "buy" else row.sell_order_id,
                        "symbol": row.symbol,
                        "side": side,
                        "price": row.price,
                        "quantity": row.quantity,
                        "amount": row.price * row.quantity * strip_hours(row.symbol),
                        "liquidity": (
                            "auction"
                            if row.aggressor is None
                            else "taker"
                            if row.aggressor == side
                            else "maker"
                        ),
                        "ts": row.ts,
                    }
                )
    return fills[:limit]


async def sold(engine: AsyncEngine, account_id: str) -> list[dict[str, Any]]:
    """Per contract, what the account sold (units), was paid (fen) and in how many trades."""
    trades = tables.trades
    query = (
        select(
            trades.c.symbol,
            func.sum(trades.c.quantity).label("quantity"),
            func.sum(trades.c.price * trades.c.quantity).label("payout"),
            func.count().label("trades"),
        )
        .where(trades.c.seller_id == account_id)
        .group_by(trades.c.symbol)
        .order_by(trades.c.symbol)
    )
    async with engine.connect() as connection:
        return [
            {
                "symbol": row.symbol,
                "quantity": int(row.quantity),
                "payout": int(row.payout) * strip_hours(row.symbol),
                "trades": int(row.trades),
            }
            for row in await connection.execute(query)
        ]


async def trades_report(
    engine: AsyncEngine,
    *,
    account_id: str | None,
    symbol: str | None,
    since_ts: int | None,
    until_ts: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Settled trades with their counterparties, newest first, filtered."""
    trades = tables.trades
    query = select(trades).order_by(trades.c.position.desc()).limit(limit)
    if account_id is not None:
        query = query.where((trades.c.buyer_id == account_id) | (trades.c.seller_id == account_id))
    if symbol is not None:
        query = query.where(trades.c.symbol == symbol)
    if since_ts is not None:
        query = query.where(trades.c.ts >= since_ts)
    if until_ts is not None:
        query = query.where(trades.c.ts < until_ts)
    async with engine.connect() as connection:
        return [
            {**row._mapping, "amount": row.price * row.quantity * strip_hours(row.symbol)}
            for row in await connection.execute(query)
        ]


async def order_paid(engine: AsyncEngine, order_id: str) -> int:
    """Fen paid by the buy order `order_id` over its settled trades."""
    trades = tables.trades
    query = (
        select(trades.c.symbol, func.sum(trades.c.price * trades.c.quantity).label("paid"))
        .where(trades.c.buy_order_id == order_id)
        .group_by(trades.c.symbol)
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    # A strip's price is per card-hour: what was paid counts every hour of it.
    return sum(int(row.paid) * strip_hours(row.symbol) for row in rows)


async def day_ahead_events(engine: AsyncEngine, day: str, types: tuple[str, ...]) -> list[AnyEvent]:
    """The stored day-ahead auction events of types `types` of the CST date `day`, in the order
    they were stored."""
    query = (
        select(events.c.data)
        .where(
            events.c.stream_id == day_ahead_stream(day),
            events.c.type.in_(types),
        )
        .order_by(events.c.position)
    )
    async with engine.connect() as connection:
        return [event_from_dict(dict(row.data)) for row in await connection.execute(query)]


async def account_order_symbols(
    engine: AsyncEngine, account_id: str, order_ids: set[str]
) -> dict[str, str]:
    """Which of `order_ids` are settled orders of the account, each with its symbol (a
    block's: its family)."""
    if not order_ids:
        return {}
    orders = tables.orders
    query = select(orders.c.order_id, orders.c.symbol).where(
        orders.c.account_id == account_id, orders.c.order_id.in_(sorted(order_ids))
    )
    async with engine.connect() as connection:
        return {row.order_id: row.symbol for row in await connection.execute(query)}
