"""Audit the exchange from its event store alone.

Folds every stored event (as `cx replay` does) and reports, each with the events involved:
- a trade stored more than once, or filling an order that was never accepted;
- an accepted order that neither rests in the book nor ended (filled or cancelled), or one
  filled or cancelled beyond its quantity;
- a hold that outlives its order, or held funds or capacity that open orders do not explain;
- cash or capacity created or lost (what is held and available must equal what was deposited);
- a projection table (balances, positions, orders) that disagrees with the events;
- a recorded checkpoint hash the replay does not reproduce.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from exchange.domain.accounts import Balance
from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import (
    CapacityDeposited,
    CapacityWithdrawn,
    DeliverySettled,
    FundsDeposited,
    FundsWithdrawn,
    OrderAccepted,
    OrderCancelled,
    TradeExecuted,
)
from settlement import projections as tables
from settlement.replay import READ_BATCH, ExchangeState
from settlement.sql_store import SqlEventStore


@dataclass(frozen=True)
class Discrepancy:
    """One thing the events do not account for."""

    kind: str
    message: str
    positions: tuple[int, ...] = ()
    """Positions of the stored events involved."""

    def __str__(self) -> str:
        where = f" (events at {', '.join(map(str, self.positions))})" if self.positions else ""
        return f"[{self.kind}] {self.message}{where}"


@dataclass
class _Order:
    accepted_at: int
    event: OrderAccepted
    filled: int = 0
    fills: list[int] = field(default_factory=list)
    cancelled_at: int | None = None
    cancelled_remaining: int = 0


@dataclass
class AuditReport:
    """What the audit looked at and what it found."""

    events: int = 0
    trades: int = 0
    orders: int = 0
    checkpoints: int = 0
    state_hash: str = ""
    discrepancies: list[Discrepancy] = field(default_factory=list)


async def audit(store: SqlEventStore, catalogue: Catalogue) -> AuditReport:
    """Check the whole history; an empty `discrepancies` means everything is accounted for."""
    report = AuditReport()
    found = report.discrepancies
    state = ExchangeState(catalogue)
    recorded = await _checkpoints(store)
    orders: dict[str, _Order] = {}
    trades: dict[str, list[int]] = defaultdict(list)
    cash_deposited = 0
    capacity_deposited: dict[str, int] = defaultdict(int)
    after = 0
    while batch := await store.read_all(after, READ_BATCH):
        for stored in batch:
            event = state.apply(stored)
            position = stored.position
            report.events += 1
            if isinstance(event, FundsDeposited):
                cash_deposited += event.amount
            elif isinstance(event, FundsWithdrawn):
                cash_deposited -= event.amount
            elif isinstance(event, CapacityDeposited):
                capacity_deposited[event.symbol] += event.quantity
            elif isinstance(event, CapacityWithdrawn | DeliverySettled):
                capacity_deposited[event.symbol] -= event.quantity
            elif isinstance(event, OrderAccepted):
                orders[event.order_id] = _Order(position, event)
            elif isinstance(event, TradeExecuted):
                trades[event.trade_id].append(position)
                for order_id in (event.buy_order_id, event.sell_order_id):
                    order = orders.get(order_id)
                    if order is None:
                        found.append(
                            Discrepancy(
                                "trade-without-order",
                                f"trade {event.trade_id} fills order {order_id}, never accepted",
                                (position,),
                            )
                        )
                        continue
                    order.filled += event.quantity
                    order.fills.append(position)
            elif isinstance(event, OrderCancelled):
                order = orders.get(event.order_id)
                if order is not None:
                    order.cancelled_at = position
                    order.cancelled_remaining = event.remaining
            expected = recorded.pop(position, None)
            if expected is not None:
                report.checkpoints += 1
                if state.state_hash() != expected:
                    found.append(
                        Discrepancy(
                            "checkpoint",
                            f"state hash at {position} is {state.state_hash()[:16]}, "
                            f"the live system recorded {expected[:16]}",
                            (position,),
                        )
                    )
        after = batch[-1].position
    report.trades = len(trades)
    report.orders = len(orders)
    report.state_hash = state.state_hash()
    for position, expected in sorted(recorded.items()):
        found.append(
            Discrepancy(
                "checkpoint",
                f"a checkpoint {expected[:16]} is recorded at {position}, where no event is",
            )
        )
    for trade_id, positions in trades.items():
        if len(positions) > 1:
            found.append(
                Discrepancy(
                    "trade-settled-twice",
                    f"trade {trade_id} is stored {len(positions)} times",
                    tuple(positions),
                )
            )
    _check_orders(state, orders, found)
    _check_holds(state, found)
    _check_conservation(state, cash_deposited, capacity_deposited, found)
    await _check_projections(store, state, orders, found)
    return report


async def _checkpoints(store: SqlEventStore) -> dict[int, str]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(select(tables.checkpoints))
        return {row.position: row.state_hash for row in rows}


def _check_orders(
    state: ExchangeState, orders: dict[str, _Order], found: list[Discrepancy]
) -> None:
    for order_id, order in orders.items():
        quantity = order.event.quantity
        involved = (order.accepted_at, *order.fills)
        if order.cancelled_at is not None:
            involved = (*involved, order.cancelled_at)
        if order.filled > quantity:
            found.append(
                Discrepancy(
                    "overfilled",
                    f"order {order_id} of {quantity} has fills of {order.filled}",
                    involved,
                )
            )
            continue
        remaining = quantity - order.filled
        resting = _resting(state, order.event.symbol, order_id)
        if order.cancelled_at is not None:
            if order.cancelled_remaining != remaining:
                found.append(
                    Discrepancy(
                        "cancel-mismatch",
                        f"order {order_id} was cancelled with {order.cancelled_remaining} "
                        f"remaining, but {remaining} of {quantity} were unfilled",
                        involved,
                    )
                )
        elif remaining and resting != remaining:
            found.append(
                Discrepancy(
                    "order-unaccounted",
                    f"order {order_id} has {remaining} of {quantity} unfilled and not cancelled, "
                    f"but {resting} rest in the book",
                    involved,
                )
            )


def _resting(state: ExchangeState, symbol: str, order_id: str) -> int:
    book = state.market.books.get(symbol)
    if book is None:
        return 0
    resting = book.orders.get(order_id)
    return 0 if resting is None else resting.remaining


def _check_holds(state: ExchangeState, found: list[Discrepancy]) -> None:
    accounts = state.accounts
    needed_cash: dict[str, int] = defaultdict(int)
    needed_capacity: dict[tuple[str, str], int] = defaultdict(int)
    for order in accounts.open_orders.values():
        if order.side == "buy":
            needed_cash[order.account_id] += order.price * order.remaining
        else:
            needed_capacity[(order.account_id, order.symbol)] += order.remaining
        if _resting(state, order.symbol, order.order_id) != order.remaining:
            found.append(
                Discrepancy(
                    "hold-outlives-order",
                    f"{order.remaining} units of order {order.order_id} ({order.account_id}) are "
                    "still held but do not rest in the book",
                )
            )
    for account_id, balance in accounts.cash.items():
        if balance.held != needed_cash.get(account_id, 0):
            found.append(
                Discrepancy(
                    "held-cash",
                    f"account {account_id} holds {balance.held} fen; its open orders need "
                    f"{needed_cash.get(account_id, 0)}",
                )
            )
    for (account_id, symbol), balance in accounts.capacity.items():
        if balance.held != needed_capacity.get((account_id, symbol), 0):
            found.append(
                Discrepancy(
                    "held-capacity",
                    f"account {account_id} holds {balance.held} units of {symbol}; its open "
                    f"orders need {needed_capacity.get((account_id, symbol), 0)}",
                )
            )


def _check_conservation(
    state: ExchangeState,
    cash_deposited: int,
    capacity_deposited: dict[str, int],
    found: list[Discrepancy],
) -> None:
    accounts = state.accounts
    cash = sum(b.available + b.held for b in accounts.cash.values())
    # Money inside the exchange: participants' cash, bonds, escrow and the platform's fees.
    inside = cash + sum(
        amount
        for name, amount in accounts.ledger.items()
        if name.startswith(("bond:", "escrow:")) or name in ("fees", "rebates")
    )
    # What voucher programmes paid in: their pledges less what they still hold.
    drawn = -sum(
        amount
        for name, amount in accounts.ledger.items()
        if name.startswith(("pledge:", "budget:", "grant:", "reserved:"))
    )
    if inside != cash_deposited + drawn:
        found.append(
            Discrepancy(
                "cash-not-conserved",
                f"the exchange holds {inside} fen in all; {cash_deposited} were deposited net "
                f"of withdrawals and voucher programmes paid {drawn}",
            )
        )
    totals: dict[str, int] = defaultdict(int)
    for (_, symbol), balance in accounts.capacity.items():
        totals[symbol] += balance.available + balance.held
    for (_, symbol), quantity in accounts.positions.items():
        totals[symbol] += quantity
    for symbol in sorted(set(totals) | set(capacity_deposited)):
        if totals[symbol] != capacity_deposited[symbol]:
            found.append(
                Discrepancy(
                    "capacity-not-conserved",
                    f"{symbol}: {totals[symbol]} units are held, available or bought; "
                    f"{capacity_deposited[symbol]} were deposited net of withdrawals and "
                    "deliveries",
                )
            )


async def _check_projections(
    store: SqlEventStore,
    state: ExchangeState,
    orders: dict[str, _Order],
    found: list[Discrepancy],
) -> None:
    accounts = state.accounts
    async with store.engine.connect() as connection:
        cash_rows = {
            r.account_id: r for r in await connection.execute(select(tables.cash_balances))
        }
        capacity_rows = {
            (r.account_id, r.symbol): r
            for r in await connection.execute(select(tables.capacity_balances))
        }
        position_rows = {
            (r.account_id, r.symbol): r.quantity
            for r in await connection.execute(select(tables.positions))
        }
        order_rows = {
            r.order_id: r
            for r in await connection.execute(
                select(tables.orders).where(tables.orders.c.status != "rejected")
            )
        }
    _compare_balances("cash_balances", cash_rows, accounts.cash, found)
    _compare_balances("capacity_balances", capacity_rows, accounts.capacity, found)
    for key in sorted(set(position_rows) | set(accounts.positions)):
        if position_rows.get(key, 0) != accounts.positions.get(key, 0):
            found.append(
                Discrepancy(
                    "projection",
                    f"positions shows {key[0]} holding {position_rows.get(key, 0)} of {key[1]}; "
                    f"the events give {accounts.positions.get(key, 0)}",
                )
            )
    for order_id in sorted(set(order_rows) | set(orders)):
        row = order_rows.get(order_id)
        order = orders.get(order_id)
        if row is None or order is None:
            where = (
                "is missing from the orders table"
                if row is None
                else "is in the orders table without an OrderAccepted event"
            )
            found.append(
                Discrepancy(
                    "projection",
                    f"order {order_id} {where}",
                    () if order is None else (order.accepted_at,),
                )
            )
            continue
        if row.filled != order.filled:
            found.append(
                Discrepancy(
                    "projection",
                    f"orders shows {order_id} filled {row.filled}; the events give {order.filled}",
                    (order.accepted_at, *order.fills),
                )
            )


def _compare_balances(
    table: str, rows: dict[Any, Any], balances: Mapping[Any, Balance], found: list[Discrepancy]
) -> None:
    """Report each balance whose projected row differs from what the events give."""
    for key in sorted(set(rows) | set(balances)):
        row = rows.get(key)
        balance = balances.get(key)
        shown = (0, 0) if row is None else (row.available, row.held)
        actual = (0, 0) if balance is None else (balance.available, balance.held)
        if shown != actual:
            who = key if isinstance(key, str) else " in ".join(key)
            found.append(
                Discrepancy(
                    "projection",
                    f"{table} shows {who} at available/held {shown}; the events give {actual}",
                )
            )


async def audit_ledger(store: SqlEventStore, catalogue: Catalogue) -> AuditReport:
    """Recompute every ledger balance from the journal's entries and check them: each entry
    balances, the trial balance is zero, and the balances equal both the projections
    (cash_balances, ledger_balances) and a replay of the events."""
    report = AuditReport()
    found = report.discrepancies
    journal = tables.journal
    from_journal: dict[str, int] = defaultdict(int)
    entries: dict[str, list[int]] = {}
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(journal).order_by(journal.c.position, journal.c.entry_id, journal.c.leg)
        )
        for row in rows:
            from_journal[row.account] += row.amount
            entry = entries.setdefault(row.entry_id, [0, row.position])
            entry[0] += row.amount
        cash_rows = {
            r.account_id: r for r in await connection.execute(select(tables.cash_balances))
        }
        ledger_rows = {
            r.account: r.balance for r in await connection.execute(select(tables.ledger_balances))
        }
    report.events = len(entries)
    for entry_id, (total, position) in entries.items():
        if total:
            found.append(
                Discrepancy(
                    "unbalanced-entry",
                    f"journal entry {entry_id} sums to {total} fen, not 0",
                    (position,),
                )
            )
    trial = sum(from_journal.values())
    if trial:
        found.append(Discrepancy("trial-balance", f"the journal's accounts sum to {trial} fen"))
    projected: dict[str, int] = dict(ledger_rows)
    for account_id, row in cash_rows.items():
        projected[f"cash:{account_id}"] = row.available
        projected[f"held:{account_id}"] = row.held
    state = ExchangeState(catalogue)
    after = 0
    while batch := await store.read_all(after, READ_BATCH):
        for stored in batch:
            state.apply(stored)
        after = batch[-1].position
    replayed: dict[str, int] = {
        name: amount for name, amount in state.accounts.ledger.items() if amount
    }
    for account_id, balance in state.accounts.cash.items():
        replayed[f"cash:{account_id}"] = balance.available
        replayed[f"held:{account_id}"] = balance.held
    for name in sorted(set(from_journal) | set(projected) | set(replayed)):
        entries_say = from_journal.get(name, 0)
        if projected.get(name, 0) != entries_say:
            found.append(
                Discrepancy(
                    "projection",
                    f"{name}: the projection shows {projected.get(name, 0)} fen, "
                    f"the journal's entries give {entries_say}",
                )
            )
        if replayed.get(name, 0) != entries_say:
            found.append(
                Discrepancy(
                    "journal-incomplete",
                    f"{name}: the events give {replayed.get(name, 0)} fen, "
                    f"the journal's entries give {entries_say}",
                )
            )
    report.state_hash = state.state_hash()
    return report
