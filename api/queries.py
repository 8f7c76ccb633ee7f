"""Reads of the settled state (the ledger projection's tables) for the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from settlement import projections as tables


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
    """Cash, capacity and positions of an account; None if it has no settled history."""
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
    if cash is None and not capacity and not held:
        return None
    return {
        "account_id": account_id,
        "cash": {
            "available": 0 if cash is None else cash.available,
            "held": 0 if cash is None else cash.held,
        },
        "capacity": [
            {"symbol": row.symbol, "available": row.available, "held": row.held} for row in capacity
        ],
        "positions": [{"symbol": row.symbol, "quantity": row.quantity} for row in held],
    }
