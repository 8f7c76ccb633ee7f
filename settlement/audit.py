"""Audit the exchange from its event store alone.

Folds every stored event (as `cx replay` does) and reports, each with the events involved:
- a trade stored more than once, or filling an order that was never accepted;
- an accepted order whose open quantity, as its fills, amends, self-trade decrements and
  cancel leave it, does not rest in the book, or one filled, decremented or cancelled beyond
  what was open of it;
- a hold that outlives its order, or held funds or capacity that open orders do not explain;
- cash or capacity created or lost (what is held and available must equal what was deposited);
- a projection table (balances, positions, orders) that disagrees with the events;
- an entitlement resold beyond what its seller held (what it sold had settled: a dispute
  resolved, a recall), and a position that the delivery desk's entitlements and obligations
  do not cover (a buyer owed by no one);
- a recorded checkpoint hash the replay does not reproduce;
- voucher totals that do not match programme usage: budgets granted past what was pledged,
  grants reserved past what was granted, reservations above the programme's rate of the
  order, and budgets, grants and reservations of the state that differ from what the
  programme, grant and order events add up to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from exchange.domain.accounts import BPS, Balance
from exchange.domain.catalogue import Catalogue, parse_symbol, strip_hours
from exchange.domain.messages import (
    BlockAccepted,
    CapacityDeposited,
    CapacityWithdrawn,
    DeliverySettled,
    FundsDeposited,
    FundsWithdrawn,
    GrantApproved,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    ProgrammeCreated,
    StripCascaded,
    TradeExecuted,
)
from settlement import projections as tables
from settlement.replay import READ_BATCH, ExchangeState
from settlement.shards import MergedView, viewing
from settlement.snapshots import snapshots
from settlement.sql_store import SqlEventStore, StoreView
from settlement.store import StoredEvent


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
    """An accepted order as its events tell it: what is open of it and where that changed."""

    accepted_at: int
    quantity: int
    """What was accepted (a block: over all its hours)."""
    symbol: str
    """A block's family."""
    block: bool = False
    open: int = field(init=False)
    """Units the events leave open: accepted, less fills and self-trade decrements, set anew
    by each amend; 0 once cancelled."""
    filled: int = 0
    changes: list[int] = field(default_factory=list)
    """Positions of its fills, amends, decrements and cancel."""
    cancelled_at: int | None = None

    def __post_init__(self) -> None:
        self.open = self.quantity

    def involved(self) -> tuple[int, ...]:
        """Positions of every event that changed the order."""
        return (self.accepted_at, *self.changes)


@dataclass
class _Vouchers:
    """What the programme, grant and order events add up to, with where they are stored."""

    budgets: dict[str, int] = field(default_factory=dict)
    granted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    grants: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    reserved: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    """Voucher funds reserved at acceptance, per (programme, account), over every order."""
    rates: dict[str, int] = field(default_factory=dict)
    reservations: list[tuple[OrderAccepted | BlockAccepted, str, int]] = field(default_factory=list)
    """Every order that reserved voucher funds, with its programme and position."""
    positions: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    """Per programme: its creation, its grants and the orders reserving from it."""

    def fold(self, event: object, position: int, state: ExchangeState) -> list[Discrepancy]:
        """Count one event; report at once what it broke, at its position."""
        ledger = state.accounts.ledger
        if isinstance(event, ProgrammeCreated):
            self.budgets[event.programme_id] = event.budget
            self.rates[event.programme_id] = event.rate_bps
            self.positions[event.programme_id].append(position)
        elif isinstance(event, GrantApproved):
            programme, account = event.programme_id, event.account_id
            # A new calendar year's first grant pledges the budget again (`renewed`).
            self.budgets[programme] = self.budgets.get(programme, 0) + event.renewed
            self.granted[programme] += event.limit
            self.grants[(programme, account)] += event.limit
            self.positions[programme].append(position)
            if ledger.get(f"budget:{programme}", 0) < 0:
                return [
                    Discrepancy(
                        "voucher-overgranted",
                        f"programme {programme} has granted {self.granted[programme]} fen of a "
                        f"budget of {self.budgets.get(programme, 0)} fen",
                        tuple(self.positions[programme]),
                    )
                ]
        elif isinstance(event, OrderAccepted | BlockAccepted) and event.voucher is not None:
            self.reserved[(event.voucher, event.account_id)] += event.voucher_reserved
            self.positions[event.voucher].append(position)
            self.reservations.append((event, event.voucher, position))
        return []

    def check(self, state: ExchangeState) -> list[Discrepancy]:
        """Judge every reservation once the whole history is folded. The store merges the
        partitions, so an order may be stored before its programme's creation or its grant's
        approval (risk saw them first, on other partitions): judged at the event, it would be
        measured against a rate or a grant not yet read."""
        found = []
        # Per (programme, account): the position and amount of each of its reservations.
        made: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for order, programme, position in self.reservations:
            made[(programme, order.account_id)].append((position, order.voucher_reserved))
            units = order.quantity
            if isinstance(order, BlockAccepted):
                units *= len(order.symbols)
            else:
                # A strip's unit is a card in each of its hours.
                units *= strip_hours(order.symbol)
            bound = order.price * units * self.rates.get(programme, 0) // BPS
            if order.voucher_reserved > bound:
                found.append(
                    Discrepancy(
                        "voucher-reservation",
                        f"order {order.order_id} reserves {order.voucher_reserved} fen of "
                        f"programme {programme}, more than its rate of the order's "
                        f"{order.price} fen x {units} units allows ({bound} fen)",
                        (position,),
                    )
                )
        ledger = state.accounts.ledger
        for programme, account in sorted(self.reserved):
            granted = self.grants.get((programme, account), 0)
            # An order reserving more than the whole grant was overdrawn however the
            # partitions interleave; beyond that, what is left of the grant at the end.
            reservations = made[(programme, account)]
            beyond = [position for position, reserved in reservations if reserved > granted]
            if beyond or ledger.get(f"grant:{programme}:{account}", 0) < 0:
                positions = beyond or [position for position, _ in reservations]
                found.append(
                    Discrepancy(
                        "voucher-overdrawn",
                        f"{account}'s orders reserve more of programme {programme} than its "
                        f"grant of {granted} fen leaves",
                        tuple(positions),
                    )
                )
        return found


@dataclass
class AuditReport:
    """What the audit looked at and what it found."""

    position: int = 0
    """The last event of the point of history audited."""
    events: int = 0
    trades: int = 0
    orders: int = 0
    checkpoints: int = 0
    state_hash: str = ""
    history_hash: str = ""
    """`ExchangeState.history_hash`: the same for one store and the shards of one history."""
    discrepancies: list[Discrepancy] = field(default_factory=list)


async def audit(store: SqlEventStore, catalogue: Catalogue, partitions: int) -> AuditReport:
    """Check the whole history, as of one consistent point of it (a live store included); an
    empty `discrepancies` means everything is accounted for."""
    async with store.view() as view:
        return await _audit(view, catalogue, partitions=partitions)


async def _audit(
    view: StoreView, catalogue: Catalogue, *, whole: bool = True, partitions: int
) -> AuditReport:
    recorded = await recorded_hashes(view.connection)
    rows = await _projection_rows(view.connection)
    return await _fold_and_check(
        view, catalogue, recorded, rows, whole=whole, partitions=partitions
    )


class HistoryReader(Protocol):
    """A history read forwards: one store's (`StoreView`) or every shard's merged."""

    position: int

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """The next events after `after_position`, in order."""


async def _fold_and_check(
    view: HistoryReader,
    catalogue: Catalogue,
    recorded: dict[int, str],
    rows: ProjectionRows,
    *,
    whole: bool,
    partitions: int,
) -> AuditReport:
    """Fold the history and check it; `whole`: the history is every event there is (one
    store, or every shard merged), so voucher budgets and grants, which the grants' own
    partition moves and every family's orders draw on, are checked too."""
    report = AuditReport(position=view.position)
    found = report.discrepancies
    state = ExchangeState(catalogue, partitions=partitions)
    orders: dict[str, _Order] = {}
    trades: dict[str, list[int]] = defaultdict(list)
    cash_deposited = 0
    capacity_deposited: dict[str, int] = defaultdict(int)
    vouchers = _Vouchers()
    cascaded: dict[str, int] = {}
    after = 0
    while batch := await view.read_all(after, READ_BATCH):
        for stored in batch:
            event = state.apply(stored)
            position = stored.position
            report.events += 1
            if whole:
                found += vouchers.fold(event, position, state)
            if isinstance(event, FundsDeposited):
                cash_deposited += event.amount
            elif isinstance(event, FundsWithdrawn):
                cash_deposited -= event.amount
            elif isinstance(event, CapacityDeposited | CapacityWithdrawn):
                deposit_capacity(event, capacity_deposited, cascaded)
            elif isinstance(event, DeliverySettled):
                capacity_deposited[event.symbol] -= event.quantity
            elif isinstance(event, StripCascaded):
                found += cascade_capacity(event, position, capacity_deposited, cascaded)
            elif isinstance(event, OrderAccepted):
                orders[event.order_id] = _Order(position, event.quantity, event.symbol)
            elif isinstance(event, BlockAccepted):
                total = event.quantity * len(event.symbols)
                orders[event.order_id] = _Order(position, total, event.family, block=True)
            elif isinstance(event, TradeExecuted):
                trades[event.trade_id].append(position)
                for order_id in (event.buy_order_id, event.sell_order_id):
                    found += _filled(orders, order_id, event, position)
                found += _resold_beyond_holding(state, event, position)
            elif isinstance(event, OrderAmended | OrderReduced | OrderCancelled):
                found += _resized(orders.get(event.order_id), event, position)
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
    report.history_hash = state.history_hash()
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
    _check_entitlements(state, found)
    _check_conservation(state, cash_deposited, capacity_deposited, found)
    if whole:
        found += vouchers.check(state)
        _check_vouchers(state, vouchers, found)
    _check_projections(rows, state, orders, found)
    return report


def deposit_capacity(
    event: CapacityDeposited | CapacityWithdrawn,
    capacity_deposited: dict[str, int],
    cascaded: dict[str, int],
) -> None:
    """Count capacity deposited (or withdrawn): of a strip that had cascaded, in each of its
    hours, as the money rules fold it."""
    units = event.quantity if isinstance(event, CapacityDeposited) else -event.quantity
    if event.symbol in cascaded:
        for hour in parse_symbol(event.symbol).hours():
            capacity_deposited[hour.symbol] += units
    else:
        capacity_deposited[event.symbol] += units


def cascade_capacity(
    event: StripCascaded,
    position: int,
    capacity_deposited: dict[str, int],
    cascaded: dict[str, int],
) -> list[Discrepancy]:
    """A strip's capacity, deposited and sold, becomes the same in each of its hours; a strip
    cascaded a second time is reported (the fold changed nothing the second time)."""
    first = cascaded.get(event.symbol)
    if first is not None:
        return [
            Discrepancy(
                "strip-cascaded-twice",
                f"strip {event.symbol} cascaded at {first} and again at {position}; the second "
                "changed nothing",
                (first, position),
            )
        ]
    cascaded[event.symbol] = position
    units = capacity_deposited.pop(event.symbol, 0)
    for hour in event.hours:
        capacity_deposited[hour] += units
    return []


def _check_vouchers(state: ExchangeState, vouchers: _Vouchers, found: list[Discrepancy]) -> None:
    """Compare each programme's and grant's figures in the state with the events' totals."""
    accounts = state.accounts
    ledger = accounts.ledger
    for programme_id, budget in sorted(vouchers.budgets.items()):
        where = tuple(vouchers.positions[programme_id])
        left = budget - vouchers.granted[programme_id]
        programme = accounts.programmes.get(programme_id)
        shown = {
            "pledge": -ledger.get(f"pledge:{programme_id}", 0),
            "budget left": ledger.get(f"budget:{programme_id}", 0),
            "unallocated": None if programme is None else programme.unallocated,
        }
        expected = {"pledge": budget, "budget left": left, "unallocated": left}
        for name, value in shown.items():
            if value != expected[name]:
                found.append(
                    Discrepancy(
                        "voucher-budget",
                        f"programme {programme_id}: {name} is {value} fen; its events give "
                        f"{expected[name]} fen (budget {budget} fen, granted "
                        f"{vouchers.granted[programme_id]} fen)",
                        where,
                    )
                )
    open_reserved: dict[tuple[str, str], int] = defaultdict(int)
    for order in accounts.open_orders.values():
        if order.voucher is not None:
            open_reserved[(order.voucher.programme_id, order.account_id)] += order.voucher.reserved
    for key in sorted(set(vouchers.grants) | set(vouchers.reserved) | set(accounts.grants)):
        programme_id, account = key
        where = tuple(vouchers.positions[programme_id])
        grant = accounts.grants.get(key)
        limit = vouchers.grants.get(key, 0)
        unreserved = ledger.get(f"grant:{programme_id}:{account}", 0)
        reserved = ledger.get(f"reserved:{programme_id}:{account}", 0)
        committed = 0 if grant is None else grant.committed
        problems = []
        if grant is not None and not grant.approved:
            problems.append("it is used but was never approved")
        elif grant is None or grant.limit != limit:
            granted = "none" if grant is None else f"{grant.limit} fen"
            problems.append(f"the grant is {granted}, not {limit} fen")
        if reserved != open_reserved[key]:
            problems.append(
                f"{reserved} fen are reserved, its open orders reserve {open_reserved[key]} fen"
            )
        if unreserved + reserved + committed != limit:
            problems.append(
                f"unreserved {unreserved} fen + reserved {reserved} fen + paid out "
                f"{committed} fen is not the {limit} fen granted"
            )
        if committed > vouchers.reserved[key]:
            problems.append(
                f"{committed} fen were paid out, more than the {vouchers.reserved[key]} fen "
                "its orders ever reserved"
            )
        for problem in problems:
            found.append(
                Discrepancy(
                    "voucher-grant", f"grant of {programme_id} to {account}: {problem}", where
                )
            )


async def recorded_hashes(connection: AsyncConnection) -> dict[int, str]:
    """State hashes the live system recorded, by position: settlement's checkpoints, and the
    snapshots it took of its state (one at least each time it stopped cleanly)."""
    rows = await connection.execute(
        select(snapshots.c.input_offset, snapshots.c.state_hash).where(
            snapshots.c.stage == tables.SNAPSHOT_STAGE, snapshots.c.topic == tables.SNAPSHOT_TOPIC
        )
    )
    recorded = {row.input_offset: row.state_hash for row in rows}
    rows = await connection.execute(select(tables.checkpoints))
    recorded.update((row.position, row.state_hash) for row in rows)
    return recorded


def _filled(
    orders: dict[str, _Order], order_id: str, trade: TradeExecuted, position: int
) -> list[Discrepancy]:
    """Count one side of a trade against its order's open quantity."""
    order = orders.get(order_id)
    if order is None:
        return [
            Discrepancy(
                "trade-without-order",
                f"trade {trade.trade_id} fills order {order_id}, never accepted",
                (position,),
            )
        ]
    order.changes.append(position)
    found = []
    if trade.quantity > order.open:
        found.append(
            Discrepancy(
                "overfilled",
                f"order {order_id} of {order.quantity} has {order.open} open, but trade "
                f"{trade.trade_id} fills {trade.quantity} of it",
                order.involved(),
            )
        )
    order.filled += trade.quantity
    order.open = max(0, order.open - trade.quantity)
    return found


def _resized(
    order: _Order | None, event: OrderAmended | OrderReduced | OrderCancelled, position: int
) -> list[Discrepancy]:
    """Follow an amend, a self-trade decrement or a cancel: each says what it leaves open."""
    if order is None:
        return []
    order.changes.append(position)
    before = order.open
    if isinstance(event, OrderAmended):
        order.open = event.remaining
        return []
    if isinstance(event, OrderReduced):
        kind, expected = "reduce-mismatch", before - event.quantity
        what = f"a self-trade decrement of {event.quantity} leaves {event.remaining}"
        order.open = max(0, expected)
    else:
        kind, expected = "cancel-mismatch", before
        what = f"it was cancelled with {event.remaining} remaining"
        order.open = 0
        order.cancelled_at = position
    if event.remaining == expected:
        return []
    return [
        Discrepancy(
            kind,
            f"order {event.order_id} of {order.quantity} had {before} open, but {what}",
            order.involved(),
        )
    ]


def _check_orders(
    state: ExchangeState, orders: dict[str, _Order], found: list[Discrepancy]
) -> None:
    """Every order's open quantity, as its events leave it, must rest in the book."""
    for order_id, order in orders.items():
        if order.cancelled_at is not None:
            continue
        resting = _resting(state, order.symbol, order_id, order.block)
        if resting != order.open:
            found.append(
                Discrepancy(
                    "order-unaccounted",
                    f"order {order_id} has {order.open} of {order.quantity} open by its events "
                    f"(filled {order.filled}), not cancelled, but {resting} rest in the book",
                    order.involved(),
                )
            )


def _resting(state: ExchangeState, symbol: str, order_id: str, block: bool) -> int:
    if block:
        # A block rests across its hours; the accounts know what is open of it.
        open_block = state.accounts.open_orders.get(order_id)
        return 0 if open_block is None else open_block.remaining
    book = state.books.get(symbol)
    if book is None:
        return 0
    resting = book.orders.get(order_id)
    return 0 if resting is None else resting.remaining


def _resold_beyond_holding(
    state: ExchangeState, trade: TradeExecuted, position: int
) -> list[Discrepancy]:
    """A resale that left its seller holding less than nothing: it sold units it no longer
    held, paid out of the escrow for what had settled (refunded) or had been sold."""
    held = state.accounts.positions.get((trade.seller_id, trade.symbol), 0)
    if held >= 0:
        return []
    return [
        Discrepancy(
            "resale-beyond-holding",
            f"trade {trade.trade_id} resold {trade.quantity} units of {trade.symbol} of "
            f"{trade.seller_id}, leaving it {held}: it sold units it no longer held (their "
            "obligation settled, or they were sold before), paid for out of the escrow",
            (position,),
        )
    ]


def _check_entitlements(state: ExchangeState, found: list[Discrepancy]) -> None:
    """Every position must be what the delivery desk of its contract's matching partition
    holds for its holder: its entitlement until delivery (a bundle's, until its period), then
    the units of its obligations. A position beyond them is owed by no provider; one below
    them was resold or settled twice. (The replica's desks follow each partition's own log
    time, as live matching's do: `ExchangeState`.)"""
    covered: dict[tuple[str, str], int] = defaultdict(int)
    for market in state.markets:
        desk = market.delivery
        for symbol, holders in desk.holdings.items():
            for account, units in holders.items():
                covered[(account, symbol)] += units
        for (symbol, _, holder), obligation in desk.obligations.items():
            covered[(holder, symbol)] += obligation.quantity
    positions = state.accounts.positions
    for account, symbol in sorted({*positions, *covered}):
        held, owed = positions.get((account, symbol), 0), covered.get((account, symbol), 0)
        if held != owed:
            found.append(
                Discrepancy(
                    "position-uncovered",
                    f"account {account} holds {held} units of {symbol}, but the delivery "
                    f"desk's entitlements and obligations cover {owed}: "
                    + (
                        f"{held - owed} units are owed by no provider"
                        if held > owed
                        else f"{owed - held} units are owed to it that it no longer holds"
                    ),
                )
            )


def _check_holds(state: ExchangeState, found: list[Discrepancy]) -> None:
    accounts = state.accounts
    needed_cash: dict[str, int] = defaultdict(int)
    needed_capacity: dict[tuple[str, str], int] = defaultdict(int)
    needed_resale: dict[tuple[str, str], int] = defaultdict(int)
    for order in accounts.open_orders.values():
        account = order.account_id
        if order.side == "buy":
            own = accounts.own_hold(order, order.price, order.remaining)
            needed_cash[account] += own + order.extra
        elif order.hours:
            for hour in order.hours:
                needed_capacity[(account, hour)] += order.remaining // len(order.hours)
        elif order.backing == "entitlement":
            needed_resale[(account, order.symbol)] += order.remaining
        else:
            needed_capacity[(account, order.symbol)] += order.remaining + order.extra
            needed_cash[account] += order.bond_per_unit * order.remaining
        if _resting(state, order.symbol, order.order_id, bool(order.hours)) != order.remaining:
            found.append(
                Discrepancy(
                    "hold-outlives-order",
                    f"{order.remaining} units of order {order.order_id} ({account}) are "
                    "still held but do not rest in the book",
                )
            )
    for key, held in accounts.resale_held.items():
        if held != needed_resale.get(key, 0):
            found.append(
                Discrepancy(
                    "held-entitlement",
                    f"account {key[0]} holds {held} units of {key[1]} for resale; its open "
                    f"orders need {needed_resale.get(key, 0)}",
                )
            )
    for account_id, balance in accounts.cash.items():
        if balance.held != needed_cash.get(account_id, 0):
            found.append(
                Discrepancy(
                    "held-cash",
                    f"account {account_id} holds {balance.held} fen; its open orders need "
                    f"{needed_cash.get(account_id, 0)} fen",
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
    # What voucher programmes and fee concessions paid in: their pledges less what they hold.
    drawn = -sum(
        amount
        for name, amount in accounts.ledger.items()
        if name.startswith(
            ("pledge:", "budget:", "grant:", "reserved:", "concession:", "pool:", "discount:")
        )
        or name == "platform"
    )
    if inside != cash_deposited + drawn:
        found.append(
            Discrepancy(
                "cash-not-conserved",
                f"the exchange holds {inside} fen in all; {cash_deposited} fen were deposited "
                f"net of withdrawals and voucher programmes paid {drawn} fen",
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


@dataclass
class ProjectionRows:
    """The projection tables an audit compares with the events: balances, positions and the
    orders' fills (of one store, or added up over every shard)."""

    cash: dict[str, Balance] = field(default_factory=dict)
    capacity: dict[tuple[str, str], Balance] = field(default_factory=dict)
    positions: dict[tuple[str, str], int] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)
    """Filled quantity per order not rejected."""

    def add(self, other: ProjectionRows) -> None:
        """Add another shard's rows: an account's balances are the sum of its parts."""
        for account_id, balance in other.cash.items():
            _add_balance(self.cash.setdefault(account_id, Balance()), balance)
        for holding, balance in other.capacity.items():
            _add_balance(self.capacity.setdefault(holding, Balance()), balance)
        for held, quantity in other.positions.items():
            self.positions[held] = self.positions.get(held, 0) + quantity
        self.filled.update(other.filled)


def _add_balance(total: Balance, part: Balance) -> None:
    total.available += part.available
    total.held += part.held


async def _projection_rows(connection: AsyncConnection) -> ProjectionRows:
    """The projection tables as of the connection's view."""
    rows = ProjectionRows()
    for r in await connection.execute(select(tables.cash_balances)):
        rows.cash[r.account_id] = Balance(r.available, r.held)
    for r in await connection.execute(select(tables.capacity_balances)):
        rows.capacity[(r.account_id, r.symbol)] = Balance(r.available, r.held)
    for r in await connection.execute(select(tables.positions)):
        rows.positions[(r.account_id, r.symbol)] = r.quantity
    settled = select(tables.orders).where(tables.orders.c.status != "rejected")
    for r in await connection.execute(settled):
        rows.filled[r.order_id] = r.filled
    return rows


def _check_projections(
    rows: ProjectionRows,
    state: ExchangeState,
    orders: dict[str, _Order],
    found: list[Discrepancy],
) -> None:
    """Compare the projection tables, read as of the audited point, with the events."""
    accounts = state.accounts
    position_rows = rows.positions
    order_rows = rows.filled
    _compare_balances("cash_balances", "fen", rows.cash, accounts.cash, found)
    _compare_balances("capacity_balances", "units", rows.capacity, accounts.capacity, found)
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
        if row != order.filled:
            found.append(
                Discrepancy(
                    "projection",
                    f"orders shows {order_id} filled {row}; the events give {order.filled}",
                    order.involved(),
                )
            )


def _compare_balances(
    table: str,
    unit: str,
    rows: Mapping[Any, Balance],
    balances: Mapping[Any, Balance],
    found: list[Discrepancy],
) -> None:
    """Report each balance (in `unit`: fen, units) whose projected row differs from what the
    events give."""
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
                    f"{table} shows {who} at available {shown[0]} {unit}, held {shown[1]} "
                    f"{unit}; the events give available {actual[0]} {unit}, held {actual[1]} "
                    f"{unit}",
                )
            )


async def audit_ledger(store: SqlEventStore, catalogue: Catalogue, partitions: int) -> AuditReport:
    """Recompute every ledger balance from the journal's entries and check them: each entry
    balances, the trial balance is zero, and the balances equal both the projections
    (cash_balances, ledger_balances) and a replay of the events, all as of one consistent
    point of the history (a live store included)."""
    async with store.view() as view:
        return await _audit_ledger(view, catalogue, partitions)


async def _audit_ledger(view: StoreView, catalogue: Catalogue, partitions: int) -> AuditReport:
    report = AuditReport(position=view.position)
    found = report.discrepancies
    journal = tables.journal
    from_journal: dict[str, int] = defaultdict(int)
    entries: dict[str, list[int]] = {}
    connection = view.connection
    rows = await connection.execute(
        select(journal).order_by(journal.c.position, journal.c.entry_id, journal.c.leg)
    )
    for row in rows:
        from_journal[row.account] += row.amount
        entry = entries.setdefault(row.entry_id, [0, row.position])
        entry[0] += row.amount
    cash_rows = {r.account_id: r for r in await connection.execute(select(tables.cash_balances))}
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
    state = ExchangeState(catalogue, partitions=partitions)
    after = 0
    while batch := await view.read_all(after, READ_BATCH):
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
                    f"the journal's entries give {entries_say} fen",
                )
            )
        if replayed.get(name, 0) != entries_say:
            found.append(
                Discrepancy(
                    "journal-incomplete",
                    f"{name}: the events give {replayed.get(name, 0)} fen, "
                    f"the journal's entries give {entries_say} fen",
                )
            )
    report.state_hash = state.state_hash()
    return report


async def audit_shard(store: SqlEventStore, catalogue: Catalogue, partitions: int) -> AuditReport:
    """Check one settlement shard on its own: everything `audit` checks but voucher budgets
    and grants (their events settle in the grants' partition, the orders drawing on them in
    each family's), which only the whole history can judge (`audit_shards`)."""
    async with store.view() as view:
        return await _audit(view, catalogue, whole=False, partitions=partitions)


async def audit_shards(
    stores: Sequence[SqlEventStore], catalogue: Catalogue, partitions: int
) -> tuple[list[AuditReport], AuditReport]:
    """Check each shard on its own (with its recorded checkpoints), then the shards' histories
    merged as one (`settlement.shards.MergedView`) against their projections added up: the
    shards' reports and the whole history's, whose positions are the merged order's."""
    async with viewing(stores) as views:
        shards = [
            await _audit(view, catalogue, whole=False, partitions=partitions) for view in views
        ]
        rows = ProjectionRows()
        for view in views:
            rows.add(await _projection_rows(view.connection))
        merged = MergedView(views)
        report = await _fold_and_check(
            merged, catalogue, {}, rows, whole=True, partitions=partitions
        )
    report.checkpoints = sum(shard.checkpoints for shard in shards)
    return shards, report


async def audit_ledger_shards(
    stores: Sequence[SqlEventStore], catalogue: Catalogue, partitions: int
) -> list[AuditReport]:
    """The ledger audit of each shard: every shard's journal balances on its own."""
    return [await audit_ledger(store, catalogue, partitions) for store in stores]
