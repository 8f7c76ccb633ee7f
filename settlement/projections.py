"""The ledger projection: balances, positions, orders and trades, kept in the append transaction.

The money arithmetic is `exchange.domain.accounts.Accounts`, the same rules the risk stage uses.
The projection keeps the accounts in memory (loaded from its tables at start), applies each
newly stored event, and writes the rows it changed in the transaction that stores the events,
so the tables always match the events up to the same position.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    case,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from exchange.domain.accounts import Accounts, JournalEntry
from exchange.domain.catalogue import Catalogue, parse_symbol, strip_hours
from exchange.domain.delivery import bundle_period
from exchange.domain.messages import (
    AnyEvent,
    ApplicationInfoRequested,
    ApplicationRejected,
    ApplicationSupplemented,
    BlockAccepted,
    BundleDrawn,
    DeliveryDisputed,
    DeliveryObligation,
    DeliverySettled,
    EnterpriseRegistered,
    GrantApplied,
    GrantApproved,
    MeteringReported,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    OrderRejected,
    StripCascaded,
    TradeExecuted,
)
from exchange.snapshots import Snapshot, SnapshotStore
from settlement.bulk import BatchAppend, BatchInsert, BatchUpdate
from settlement.replay import (
    READ_BATCH,
    ExchangeState,
    SnapshotRefused,
    replay,
    restore_checked,
    stored_partition,
)
from settlement.schema import events as stored_events
from settlement.schema import utc_now
from settlement.sql_store import SqlEventStore
from settlement.store import StoredEvent

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 1000
"""Events between two recorded state hashes."""
SNAPSHOT_EVERY = 20_000
"""Events between two snapshots of settlement's state."""
SNAPSHOT_STAGE = "settlement"
SNAPSHOT_TOPIC = "event-store"

metadata = MetaData()
"""The projections' tables, all rebuilt from the events (`cx projections rebuild`)."""

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
    Column("symbols", Text),
    Column("group_id", Text),
    Index("orders_account_idx", "account_id", "created_ts"),
    Index("orders_group_idx", "group_id"),
)
"""Orders and blocks as settled. A block's `symbol` is its family; `symbols` are its hourly
contracts (comma-separated, as the block lists them; null for an order of one contract) and
`group_id` the exclusive group it is an alternative of (null for any other order)."""

journal = Table(
    "journal",
    metadata,
    Column("entry_id", Text, primary_key=True),
    Column("leg", Integer, primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("account", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Index("journal_account_idx", "account", "position"),
)
"""Every leg of every balanced journal entry, with the position of the event that caused it."""

ledger_balances = Table(
    "ledger_balances",
    metadata,
    Column("account", Text, primary_key=True),
    Column("balance", BigInteger, nullable=False),
)
"""Ledger accounts other than participants' cash and held: bonds, escrow, fees, programmes."""

deliveries = Table(
    "deliveries",
    metadata,
    Column("symbol", Text, primary_key=True),
    Column("provider_id", Text, primary_key=True),
    Column("buyer_id", Text, primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("bond", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("window_ends", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("delivered", BigInteger),
    Column("paid", BigInteger),
    Column("refund", BigInteger),
    Column("penalty", BigInteger),
    Column("resolved_by", Text),
    Column("updated_ts", BigInteger, nullable=False),
    Index("deliveries_buyer_idx", "buyer_id", "symbol"),
)
"""Delivery obligations provider -> buyer: owed, metered, disputed or settled."""

delivery_recalls = Table(
    "delivery_recalls",
    metadata,
    Column("symbol", Text, primary_key=True),
    Column("provider_id", Text, primary_key=True),
    Column("buyer_id", Text, primary_key=True),
    Column("recall_id", Text, primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    Column("refund", BigInteger, nullable=False),
    Column("bond", BigInteger, nullable=False),
    Column("penalty", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Index("delivery_recalls_buyer_idx", "buyer_id", "symbol"),
)
"""Units a provider recalled before their delivery hour, per holder: refunded and compensated.
Kept apart from `deliveries`, whose one row per contract, provider and buyer is the obligation
the same pair may still owe at the delivery hour."""

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("trade_id", Text, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("account_id", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("gross", BigInteger, nullable=False),
    Column("voucher", BigInteger, nullable=False),
    Column("programme_id", Text),
    Column("fee", BigInteger, nullable=False),
    Column("concession", BigInteger, nullable=False),
    Column("paid", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Index("invoice_lines_account_idx", "account_id", "order_id"),
    Index("invoice_lines_programme_idx", "programme_id", "ts"),
)
"""What each purchase cost and who paid it: gross, voucher, platform fee, maker rebate
(`concession`), and what the enterprise paid; voucher clawbacks are journal entries against the
grant. Fee concessions are the account's own `FeeConceded` events, settled from another
partition at its own pace: invoices add them when read (`settlement.reports.invoices`)."""

enterprises = Table(
    "enterprises",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("uscc", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("city", Text, nullable=False),
    Column("registered_ts", BigInteger, nullable=False),
)
"""The enterprise each account registered (`EnterpriseRegistered`; the latest registration),
with its unified social credit code: what applications and the account's page name it by."""

enterprise_registrations = Table(
    "enterprise_registrations",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("name", Text, nullable=False),
    Column("uscc", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("city", Text, nullable=False),
    Column("registered_ts", BigInteger, nullable=False),
    Index("enterprise_registrations_ts_idx", "account_id", "registered_ts"),
)
"""Every registration of each account (`EnterpriseRegistered`, by its event's position), the
ones replaced included: an invoice names the buyer as registered when it bought (the latest
registration at or before the purchase's log time), so a later registration, or another account
taking the code, never changes an invoice already issued."""

grant_applications = Table(
    "grant_applications",
    metadata,
    Column("programme_id", Text, primary_key=True),
    Column("application_id", Text, primary_key=True),
    Column("account_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("uscc", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("city", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("intended_use", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("question", Text),
    Column("answer", Text),
    Column("reason", Text),
    Column("granted", BigInteger),
    Column("submitted_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Index("grant_applications_account_idx", "account_id", "submitted_ts"),
)
"""Enterprises' applications for grants (算力券申领) and where each stands: pending,
info_requested (with the administrator's `question`), approved (`granted` fen) or rejected
(with the `reason`); `answer` is the applicant's latest answer."""

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("position", BigInteger, primary_key=True),
    Column("state_hash", Text, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False, server_default=utc_now()),
)
"""State hashes settlement recorded as it went: what a replay must reproduce."""

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
    Column("aggressor", Text),
    Column("ts", BigInteger, nullable=False),
    Index("trades_symbol_idx", "symbol", "position"),
)
"""Settled trades; `aggressor` is the taker's side, null for a call auction's trade."""


_FILL = BatchUpdate(
    {"order_id": Text(), "quantity": BigInteger(), "ts": BigInteger()},
    lambda row: (
        update(orders)
        .where(orders.c.order_id == row["order_id"])
        .values(
            filled=orders.c.filled + row["quantity"],
            status=case(
                (orders.c.filled + row["quantity"] >= orders.c.quantity, "filled"),
                else_=orders.c.status,
            ),
            updated_ts=row["ts"],
        )
    ),
)
"""Fills of an order: its filled quantity grows by `quantity` (a batch's fills summed)."""
_RESIZE = BatchUpdate(
    {"order_id": Text(), "price": BigInteger(), "delta": BigInteger(), "ts": BigInteger()},
    lambda row: (
        update(orders)
        .where(orders.c.order_id == row["order_id"])
        .values(
            price=row["price"],
            quantity=orders.c.quantity + row["delta"],
            updated_ts=row["ts"],
        )
    ),
)
"""Amends (new price, open quantity changed by delta) and self-trade decrements."""
_CANCEL = BatchUpdate(
    {"order_id": Text(), "reason": Text(), "ts": BigInteger()},
    lambda row: (
        update(orders)
        .where(orders.c.order_id == row["order_id"])
        .values(status="cancelled", reason=row["reason"], updated_ts=row["ts"])
    ),
)
_UPSERT_ORDERS = BatchInsert(orders, on_conflict="update")
"""An id refused before (say for want of funds) may be accepted on a retry: the acceptance
replaces the rejected row."""
_INSERT_REJECTED = BatchInsert(orders, on_conflict="nothing")
"""A rejected duplicate reuses an existing order id; the original row stays."""
_INSERT_TRADES = BatchAppend(trades)
_INSERT_LINES = BatchAppend(invoice_lines)
_INSERT_JOURNAL = BatchAppend(journal)
_UPSERT_CASH = BatchInsert(cash_balances, on_conflict="update")
_UPSERT_CAPACITY = BatchInsert(capacity_balances, on_conflict="update")
_UPSERT_POSITIONS = BatchInsert(positions, on_conflict="update")
_UPSERT_LEDGER = BatchInsert(ledger_balances, on_conflict="update")
_UPSERT_ENTERPRISES = BatchInsert(enterprises, on_conflict="update")
_INSERT_REGISTRATIONS = BatchAppend(enterprise_registrations)


_DELIVERY_EVENTS = (DeliveryObligation, MeteringReported, DeliveryDisputed, DeliverySettled)
_APPLICATION_EVENTS = (
    GrantApplied,
    ApplicationInfoRequested,
    ApplicationSupplemented,
    ApplicationRejected,
    GrantApproved,
)
_RESIZE_EVENTS = (OrderAmended, OrderReduced)
_ROLES: tuple[tuple[str, tuple[type[AnyEvent], ...]], ...] = (
    ("cascade", (StripCascaded,)),
    ("trade", (TradeExecuted,)),
    ("delivery", _DELIVERY_EVENTS),
    ("drawn", (BundleDrawn,)),
    ("registered", (EnterpriseRegistered,)),
    ("application", _APPLICATION_EVENTS),
    ("accepted", (OrderAccepted,)),
    ("rejected", (OrderRejected,)),
    ("block", (BlockAccepted,)),
    ("resize", _RESIZE_EVENTS),
    ("cancel", (OrderCancelled,)),
)
"""What the projection writes for an event, by the classes it is an instance of (no event
class is of two roles)."""


@functools.cache
def _role(kind: type[AnyEvent]) -> str | None:
    """The role of an event type, found once per type: an isinstance test against a pydantic
    model's class that does not match goes through ABCMeta (about 0.12 µs), and telling an
    event's role by testing class after class took some twenty of them."""
    return next((role for role, classes in _ROLES if issubclass(kind, classes)), None)


class _ByOrder:
    """A batch's changes to orders, one per order: a batch statement may change a row once."""

    def __init__(self) -> None:
        self.fills: dict[str, dict[str, Any]] = {}
        self.resizes: dict[str, dict[str, Any]] = {}
        self.cancels: dict[str, dict[str, Any]] = {}

    def fill(self, order_id: str, quantity: int, ts: int) -> None:
        known = self.fills.get(order_id)
        if known is None:
            self.fills[order_id] = {"order_id": order_id, "quantity": quantity, "ts": ts}
        else:
            known["quantity"] += quantity
            known["ts"] = ts

    def resize(self, order_id: str, price: int, delta: int, ts: int) -> None:
        known = self.resizes.get(order_id)
        if known is None:
            resize = {"order_id": order_id, "price": price, "delta": delta, "ts": ts}
            self.resizes[order_id] = resize
        else:
            known.update(price=price, delta=known["delta"] + delta, ts=ts)

    def cancel(self, order_id: str, reason: str, ts: int) -> None:
        self.cancels[order_id] = {"order_id": order_id, "reason": reason, "ts": ts}

    def apply_to_new(self, rows: list[dict[str, Any]]) -> None:
        """Apply the changes to orders the batch upserts to their rows, as the resize, fill
        and cancel statements (in that order) would change the stored rows after the upsert,
        and take them out of those statements. Most orders that trade at once are accepted,
        filled and often finished in one batch: PostgreSQL then writes each row once instead
        of inserting it and writing a new version of it for each statement."""
        resizes, fills, cancels = self.resizes, self.fills, self.cancels
        for row in rows:
            order_id = row["order_id"]
            resize = resizes.pop(order_id, None)
            if resize is not None:
                row["price"] = resize["price"]
                row["quantity"] += resize["delta"]
                row["updated_ts"] = resize["ts"]
            fill = fills.pop(order_id, None)
            if fill is not None:
                row["filled"] += fill["quantity"]
                if row["filled"] >= row["quantity"]:
                    row["status"] = "filled"
                row["updated_ts"] = fill["ts"]
            cancel = cancels.pop(order_id, None)
            if cancel is not None:
                row["status"] = "cancelled"
                row["reason"] = cancel["reason"]
                row["updated_ts"] = cancel["ts"]


def _insert(connection: AsyncConnection, table: Table) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _last_per_key(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One row per key, the last one (what upserting the rows one by one would leave)."""
    return list({row[key]: row for row in rows}.values())


def _first_per_key(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One row per key, the first one (what inserting them one by one, skipping conflicts,
    would leave)."""
    first: dict[Any, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row[key], row)
    return list(first.values())


class _BundleResales:
    """Which holder each token bundle obligation of an input moved from, if any, inferred for
    obligations stored before the delivery desk said so (`DeliveryObligation.moved_from`).

    The delivery desk answers a bundle's trade in its period with the buyer's obligation only:
    units topped up from the seller's capacity (one obligation, the seller its provider, of the
    trade's quantity) or units moved from the seller's own obligations (one per provider, in
    the providers' order, no more than the trade's quantity). Its obligations follow every
    trade of the input that caused them, in the trades' order, so the input's trades tell which
    obligation is a move and whose row it takes its units from.

    Only a guess, wrong in rare cases: a provider reselling exactly one trade's worth of its
    own bought-back bundle reads as a top-up from its capacity; an allocation at the period's
    start to a buyer whose trade started the period reads as a move from the seller. (Drawn
    tokens a resale moved, before matching refused such resales, stay on the seller's row
    whichever way, its tokens used until its next draw-down or settlement states them again
    and what was paid for them for good: no event said how many moved.) It is kept only for
    obligations stored before the desk said where units came from, which can only be a day's
    development and trial histories: bundles trade since 79e319b (2026-12-04), and the
    projection moved resold units out of the seller's row at all only from 1834476
    (2026-12-05); rebuilt, their rows come out as that projection made them."""

    def __init__(self) -> None:
        self.input: str | None = None
        """The input (`topic:partition:offset:`) whose trades are kept."""
        self._trades: list[list[Any]] = []
        """Per trade of a bundle in its period: symbol, buyer, seller, units not yet owed,
        the provider of its last move (None before one)."""
        self._next = 0

    def start(self, prefix: str) -> None:
        """Keep the trades of another input."""
        self.input = prefix
        self._trades = []
        self._next = 0

    def trade(self, symbol: str, buyer_id: str, seller_id: str, quantity: int) -> None:
        self._trades.append([symbol, buyer_id, seller_id, quantity, None])

    def source(self, symbol: str, provider_id: str, buyer_id: str, quantity: int) -> str | None:
        """The holder an obligation's units moved from; None for units newly owed (a top-up
        from capacity, a bundle's allocation at its period's start)."""
        trades = self._trades
        while self._next < len(trades):
            trade = trades[self._next]
            traded, buyer, seller, left, last_provider = trade
            if traded != symbol or buyer != buyer_id:
                if last_provider is None:
                    return None
                # The seller held less than it sold: what is left of the trade moved nothing.
                self._next += 1
                continue
            if last_provider is None and provider_id == seller and quantity == left:
                self._next += 1
                return None
            if (
                provider_id != seller
                and quantity <= left
                and (last_provider is None or provider_id > last_provider)
            ):
                trade[3] = left - quantity
                trade[4] = provider_id
                if not trade[3]:
                    self._next += 1
                return str(seller)
            if last_provider is None:
                return None
            self._next += 1
        return None


def _input_of(event_id: str) -> tuple[str, int]:
    """The input an event id names (`topic:partition:offset:`) and the event's place in it.

    An id of another form (histories written by hand, imported ones) is an input of its own,
    its first event: nothing before it is read back, and settlement never stalls on it."""
    prefix, _, index = event_id.rpartition(":")
    if not (prefix and index.isdigit() and index.isascii()):
        return event_id, 0
    return prefix + ":", int(index)


def _in_bundle_period(symbol: str, ts: int) -> bool:
    period = bundle_period(symbol)
    return period is not None and period[0] <= ts < period[1]


class LedgerProjection:
    """Projects events into balances, positions, orders and trades, and records checkpoints.

    The state itself is an `ExchangeState`, the same fold `cx replay` runs; every
    CHECKPOINT_EVERY events the projection stores its state hash with the position it was
    taken at, in the transaction that stores the events, so a replay can prove it rebuilt
    exactly what the live system had.
    """

    def __init__(
        self, catalogue: Catalogue, *, record_checkpoints: bool = True, partitions: int
    ) -> None:
        self.catalogue = catalogue
        self.record_checkpoints = record_checkpoints
        self.partitions = partitions
        """How many orders partitions matching runs: the replica's books follow each one's."""
        self.state = ExchangeState(catalogue, partitions=partitions, journal=True)
        self.snapshot_due = False
        self._since_snapshot = 0
        self._decoded: dict[str, AnyEvent] = {}
        self._resales = _BundleResales()
        self._first_input: str | None = None
        """The input of the first event applied since the state was built or loaded: its
        earlier events may have been applied before, so its trades are read from the store
        ("" once read)."""

    @property
    def accounts(self) -> Accounts:
        """Balances, capacity, positions and open orders as settled."""
        return self.state.accounts

    async def load(self, store: SqlEventStore, snapshots: SnapshotStore) -> None:
        """Rebuild the state: the latest snapshot, once proved to be the state settlement had
        there (`restore_checked`), then every event stored after it, checked against the
        checkpoints recorded after it. A snapshot that fails either check is refused (logged
        with the reason) and the state is rebuilt from position 0."""
        saved = await snapshots.latest(SNAPSHOT_STAGE, SNAPSHOT_TOPIC, 0)
        start: ExchangeState | None = None
        recorded: dict[int, str] = {}
        if saved is not None:
            async with store.engine.connect() as connection:
                rows = await connection.execute(
                    select(checkpoints.c.position, checkpoints.c.state_hash).where(
                        checkpoints.c.position >= saved.input_offset
                    )
                )
                recorded = {row.position: row.state_hash for row in rows}
            try:
                start = restore_checked(
                    self.catalogue, saved, recorded.get(saved.input_offset), self.partitions
                )
            except SnapshotRefused as refusal:
                log.error("settlement snapshot refused, rebuilding from position 0: %s", refusal)
        result = await replay(
            store, self.catalogue, checkpoints=recorded, start=start, partitions=self.partitions
        )
        if start is not None and result.mismatches:
            log.error(
                "settlement snapshot refused, rebuilding from position 0: the state folded from "
                "the snapshot at position %d differs from the checkpoint at position %d",
                start.position,
                result.mismatches[0].position,
            )
            result = await replay(store, self.catalogue, partitions=self.partitions)
        state = result.state
        # The journal holds only entries not yet written: those of events already stored
        # were written with them.
        state.accounts.journal = []
        self.state = state
        self._resales = _BundleResales()
        self._first_input = None
        self._since_snapshot = 0
        self.snapshot_due = False

    def decoded(self, events: dict[str, AnyEvent]) -> None:
        """The events of the next append, already decoded by the caller (by event id), so the
        append transaction does not validate them a second time."""
        self._decoded = events

    def snapshot(self) -> Snapshot:
        """The state as a snapshot, at its position."""
        return Snapshot(
            SNAPSHOT_STAGE,
            SNAPSHOT_TOPIC,
            0,
            self.state.position,
            self.state.state_hash(),
            self.state.snapshot(),
        )

    async def __call__(self, connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        """Apply newly stored events and write the rows they change."""
        dirty: set[str] = set()
        dirty_holdings: set[tuple[str, str]] = set()
        new_orders: list[dict[str, Any]] = []
        rejected_orders: list[dict[str, Any]] = []
        new_trades: list[dict[str, Any]] = []
        changes = _ByOrder()
        entries: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        delivery_changes: list[tuple[str, dict[str, Any]]] = []
        registered: list[dict[str, Any]] = []
        registrations: list[dict[str, Any]] = []
        application_changes: list[dict[str, Any]] = []
        journal_entries = self.accounts.journal
        if journal_entries is None:
            raise RuntimeError("the settled state keeps no journal: load it before applying")
        before = self.state.position
        if self._first_input is None and events:
            self._first_input = _input_of(events[0].event_id)[0]
        for stored in events:
            prior = self.accounts.open_orders.get(str(stored.data.get("order_id")))
            prior_state = None if prior is None else (prior.price, prior.remaining)
            prior_hours = () if prior is None else prior.hours
            symbol = stored.data.get("symbol")
            if isinstance(symbol, str) and symbol in self.accounts.cascaded_strips:
                # Capacity of a strip deposited, or freed by a sell cancelled, after its
                # cascade goes to its hours.
                prior_hours = tuple(spec.symbol for spec in parse_symbol(symbol).hours())
            decoded = self._decoded.get(stored.event_id)
            journalled = len(journal_entries)
            if decoded is None:
                event = self.state.apply(stored)
            else:
                event = decoded
                self.state.apply_event(event, stored.position, stored_partition(stored))
            for entry in journal_entries[journalled:]:
                for leg, (account, amount) in enumerate(entry.legs):
                    entries.append(
                        {
                            "entry_id": entry.entry_id,
                            "leg": leg,
                            "position": stored.position,
                            "kind": entry.kind,
                            "ts": entry.ts,
                            "account": account,
                            "amount": amount,
                        }
                    )
            _touched(event, prior_hours, dirty, dirty_holdings)
            role = _role(type(event))
            # Each branch's isinstance narrows the type; it matches at the first class tried.
            if role is None:
                pass
            elif role == "cascade" and isinstance(event, StripCascaded):
                _touched_by_cascade(event, self.accounts, dirty_holdings)
            elif role == "trade" and isinstance(event, TradeExecuted):
                if _in_bundle_period(event.symbol, event.ts):
                    await self._bundle_input(connection, event.event_id)
                    self._resales.trade(
                        event.symbol, event.buyer_id, event.seller_id, event.quantity
                    )
                lines.append(_invoice_line(event, journal_entries[journalled:]))
                new_trades.append(_trade_row(event, stored.position))
                changes.fill(event.buy_order_id, event.quantity, event.ts)
                changes.fill(event.sell_order_id, event.quantity, event.ts)
            elif role == "delivery" and isinstance(event, _DELIVERY_EVENTS):
                if isinstance(event, DeliveryObligation):
                    # The desk says which holder a bundle's units moved from ("": none); an
                    # obligation stored before it did is inferred from the input's trades.
                    moved_from = event.moved_from
                    if moved_from is None and _in_bundle_period(event.symbol, event.ts):
                        await self._bundle_input(connection, event.event_id)
                        moved_from = self._resales.source(
                            event.symbol, event.provider_id, event.buyer_id, event.quantity
                        )
                    if moved_from:
                        delivery_changes.append(_moved_change(event, moved_from))
                delivery_changes.append(_delivery_change(event))
            elif role == "drawn" and isinstance(event, BundleDrawn):
                delivery_changes.append(_bundle_drawn_change(event))
            elif role == "registered" and isinstance(event, EnterpriseRegistered):
                registered.append(_enterprise_row(event))
                registrations.append({**registered[-1], "position": stored.position})
            elif role == "application" and isinstance(event, _APPLICATION_EVENTS):
                application_changes.append(_application_change(event))
            elif role == "accepted" and isinstance(event, OrderAccepted):
                new_orders.append(_order_row(event, "open", None))
            elif role == "rejected" and isinstance(event, OrderRejected):
                rejected_orders.append(_order_row(event, "rejected", event.reason.value))
            elif role == "block" and isinstance(event, BlockAccepted):
                new_orders.append(
                    {
                        "order_id": event.order_id,
                        "account_id": event.account_id,
                        "symbol": event.family,
                        "side": event.side,
                        "price": event.price,
                        "quantity": event.quantity * len(event.symbols),
                        "filled": 0,
                        "status": "open",
                        "reason": None,
                        "client_order_id": event.client_order_id,
                        "created_ts": event.ts,
                        "updated_ts": event.ts,
                        "symbols": ",".join(event.symbols),
                        "group_id": event.group,
                    }
                )
            elif role == "resize" and isinstance(event, _RESIZE_EVENTS):
                if prior_state is not None:
                    price, remaining = prior_state
                    if isinstance(event, OrderAmended):
                        price = event.price
                    changes.resize(event.order_id, price, event.remaining - remaining, event.ts)
            elif role == "cancel" and isinstance(event, OrderCancelled):
                changes.cancel(event.order_id, event.reason.value, event.ts)
        del journal_entries[:]
        await self._write(connection, dirty, dirty_holdings, entries)
        if new_orders:
            accepted = _last_per_key(new_orders, "order_id")
            changes.apply_to_new(accepted)
            await _UPSERT_ORDERS.execute(connection, accepted)
        if rejected_orders:
            await _INSERT_REJECTED.execute(connection, _first_per_key(rejected_orders, "order_id"))
        if new_trades:
            await _INSERT_TRADES.execute(connection, new_trades)
        # Each kind applied over the whole batch, in this order, as one statement each.
        await _RESIZE.execute(connection, list(changes.resizes.values()))
        await _FILL.execute(connection, list(changes.fills.values()))
        await _CANCEL.execute(connection, list(changes.cancels.values()))
        if lines:
            await _INSERT_LINES.execute(connection, lines)
        for kind, row in delivery_changes:
            if kind == "owed" and bundle_period(row["symbol"]) is not None:
                await connection.execute(_bundle_owed(connection, row))
            elif kind == "owed":
                await connection.execute(_insert(connection, deliveries), [row])
            elif kind == "recalled":
                await connection.execute(_insert(connection, delivery_recalls), [row])
            elif kind == "moved":
                await connection.execute(
                    update(deliveries)
                    .where(deliveries.c.symbol == row["symbol"])
                    .where(deliveries.c.provider_id == row["provider_id"])
                    .where(deliveries.c.buyer_id == row["buyer_id"])
                    .values(
                        {
                            **{
                                name: deliveries.c[name] - row[name]
                                for name in ("quantity", "amount", "bond", "fee")
                            },
                            "updated_ts": row["updated_ts"],
                        }
                    )
                )
            else:
                await connection.execute(
                    update(deliveries)
                    .where(deliveries.c.symbol == row.pop("symbol"))
                    .where(deliveries.c.provider_id == row.pop("provider_id"))
                    .where(deliveries.c.buyer_id == row.pop("buyer_id"))
                    .values(**row)
                )
        if registered:
            await _UPSERT_ENTERPRISES.execute(connection, _last_per_key(registered, "account_id"))
            await _INSERT_REGISTRATIONS.execute(connection, registrations)
        for change in application_changes:
            if "submitted_ts" in change:
                await connection.execute(_insert(connection, grant_applications), [change])
            else:
                await connection.execute(
                    update(grant_applications)
                    .where(grant_applications.c.programme_id == change.pop("programme_id"))
                    .where(grant_applications.c.application_id == change.pop("application_id"))
                    .values(**change)
                )
        position = self.state.position
        self._since_snapshot += len(events)
        self.snapshot_due = self._since_snapshot >= SNAPSHOT_EVERY
        # A snapshot is taken where this batch ends: its checkpoint is recorded there too, so a
        # replay restarting from it can tell it is the state the live system had.
        if self.record_checkpoints and (
            self.snapshot_due or position // CHECKPOINT_EVERY > before // CHECKPOINT_EVERY
        ):
            await connection.execute(
                checkpoints.insert(),
                [{"position": position, "state_hash": self.state.state_hash()}],
            )

    async def _bundle_input(self, connection: AsyncConnection, event_id: str) -> None:
        """Keep the trades of the input a bundle's trade or obligation belongs to, for
        obligations that do not say where their units came from; the first input after the
        state was loaded is read from the store up to the event, since part of it may have been
        applied before."""
        prefix, index = _input_of(event_id)
        resales = self._resales
        if resales.input == prefix:
            return
        resales.start(prefix)
        if prefix != self._first_input or not index:
            return
        self._first_input = ""
        earlier = [f"{prefix}{n}" for n in range(index)]
        rows = await connection.execute(
            select(stored_events.c.type, stored_events.c.data)
            .where(stored_events.c.event_id.in_(earlier))
            .order_by(stored_events.c.position)
        )
        for kind, data in rows:
            if not _in_bundle_period(data.get("symbol", ""), data.get("ts", 0)):
                continue
            if kind == "TradeExecuted":
                resales.trade(data["symbol"], data["buyer_id"], data["seller_id"], data["quantity"])
            elif kind == "DeliveryObligation" and "moved_from" not in data:
                resales.source(
                    data["symbol"], data["provider_id"], data["buyer_id"], data["quantity"]
                )

    async def _write(
        self,
        connection: AsyncConnection,
        accounts_touched: Iterable[str],
        holdings: Iterable[tuple[str, str]],
        entries: list[dict[str, Any]],
    ) -> None:
        accounts = self.accounts
        cash = [
            {"account_id": a, "available": b.available, "held": b.held}
            for a in sorted(accounts_touched)
            if (b := accounts.cash.get(a)) is not None
        ]
        if cash:
            await _UPSERT_CASH.execute(connection, cash)
        held = sorted(holdings)
        capacity = [
            {"account_id": a, "symbol": s, "available": b.available, "held": b.held}
            for a, s in held
            if (b := accounts.capacity.get((a, s))) is not None
        ]
        if capacity:
            await _UPSERT_CAPACITY.execute(connection, capacity)
        quantities = [
            {"account_id": a, "symbol": s, "quantity": accounts.positions[(a, s)]}
            for a, s in held
            if (a, s) in accounts.positions
        ]
        if quantities:
            await _UPSERT_POSITIONS.execute(connection, quantities)
        if entries:
            await _INSERT_JOURNAL.execute(connection, entries)
            ledger = accounts.ledger
            touched = sorted(
                {e["account"] for e in entries if not e["account"].startswith(("cash:", "held:"))}
            )
            if touched:
                await _UPSERT_LEDGER.execute(
                    connection,
                    [{"account": name, "balance": ledger.get(name, 0)} for name in touched],
                )

    def snapshot_taken(self) -> None:
        """The runner stored `snapshot()` after the batch committed."""
        self._since_snapshot = 0
        self.snapshot_due = False


async def rebuild(store: SqlEventStore, catalogue: Catalogue, partitions: int) -> int:
    """Empty every projection table and fold all the events into them again, in one write
    transaction; the number of events folded. `checkpoints` is kept: it records the hashes
    the live system had where its batches ended, which replays and audits check against."""
    projection = LedgerProjection(catalogue, record_checkpoints=False, partitions=partitions)
    rebuilt = [t for t in reversed(metadata.sorted_tables) if t is not checkpoints]
    folded = 0
    async with store.write_transaction() as connection:
        for projected in rebuilt:
            await connection.execute(delete(projected))
        after = 0
        while batch := await store.read_all(after, READ_BATCH):
            await projection(connection, batch)
            folded += len(batch)
            after = batch[-1].position
    return folded


def _invoice_line(trade: TradeExecuted, entries: Sequence[JournalEntry]) -> dict[str, Any]:
    """The buyer's side of a trade as an invoice line, from the journal entry that paid it."""
    # A strip's price is per card-hour: its gross counts every hour of it.
    gross = trade.price * trade.quantity * strip_hours(trade.symbol)
    voucher = fee = concession = 0
    programme_id = None
    for entry in entries:
        if entry.kind != "trade_buy":
            continue
        for name, amount in entry.legs:
            if name.startswith("reserved:"):
                voucher -= amount
                programme_id = name.split(":")[1]
            elif name == "fees":
                fee += amount
            elif name == "rebates":
                concession -= amount
    return {
        "trade_id": trade.trade_id,
        "order_id": trade.buy_order_id,
        "account_id": trade.buyer_id,
        "symbol": trade.symbol,
        "quantity": trade.quantity,
        "gross": gross,
        "voucher": voucher,
        "programme_id": programme_id,
        "fee": fee,
        "concession": concession,
        "paid": gross + fee - concession - voucher,
        "ts": trade.ts,
    }


def _enterprise_row(event: EnterpriseRegistered) -> dict[str, Any]:
    return {
        "account_id": event.account_id,
        "name": event.name,
        "uscc": event.uscc,
        "kind": event.kind,
        "city": event.city,
        "registered_ts": event.ts,
    }


def _application_change(
    event: GrantApplied
    | ApplicationInfoRequested
    | ApplicationSupplemented
    | ApplicationRejected
    | GrantApproved,
) -> dict[str, Any]:
    """The applications row an application creates, or the columns a later step changes."""
    key = {"programme_id": event.programme_id, "application_id": event.application_id}
    if isinstance(event, GrantApplied):
        return {
            **key,
            **event.model_dump(include={"account_id", "name", "uscc", "kind", "city"}),
            "amount": event.amount,
            "intended_use": event.intended_use,
            "status": "pending",
            "question": None,
            "answer": None,
            "reason": None,
            "granted": None,
            "submitted_ts": event.ts,
            "updated_ts": event.ts,
        }
    if isinstance(event, ApplicationInfoRequested):
        return {
            **key,
            "status": "info_requested",
            "question": event.question,
            "updated_ts": event.ts,
        }
    if isinstance(event, ApplicationSupplemented):
        return {**key, "status": "pending", "answer": event.answer, "updated_ts": event.ts}
    if isinstance(event, ApplicationRejected):
        return {**key, "status": "rejected", "reason": event.reason, "updated_ts": event.ts}
    return {**key, "status": "approved", "granted": event.limit, "updated_ts": event.ts}


def _delivery_change(
    event: DeliveryObligation | MeteringReported | DeliveryDisputed | DeliverySettled,
) -> tuple[str, dict[str, Any]]:
    """The deliveries row an event creates ("owed"), the columns it changes, or the recall row
    a recall's settlement creates ("recalled")."""
    key = {"symbol": event.symbol, "provider_id": event.provider_id, "buyer_id": event.buyer_id}
    if isinstance(event, DeliveryObligation):
        return "owed", {
            **key,
            "quantity": event.quantity,
            "amount": event.amount,
            "bond": event.bond,
            "fee": event.fee,
            "window_ends": event.window_ends,
            "status": "owed",
            "updated_ts": event.ts,
        }
    if isinstance(event, MeteringReported):
        return "change", {
            **key,
            "status": "metered",
            "delivered": event.delivered,
            "updated_ts": event.ts,
        }
    if isinstance(event, DeliveryDisputed):
        return "change", {**key, "status": "disputed", "updated_ts": event.ts}
    if event.used is not None:
        return "change", _bundle_settled_change(event, key)
    if event.recall_id is not None:
        return "recalled", {
            **key,
            "recall_id": event.recall_id,
            "quantity": event.quantity,
            "refund": event.refund,
            "bond": event.bond,
            "penalty": event.penalty,
            "reason": event.reason,
            "updated_ts": event.ts,
        }
    return "change", {
        **key,
        "status": "settled",
        "delivered": event.delivered,
        "paid": event.paid - event.fee,
        "refund": event.refund,
        "penalty": event.penalty,
        "resolved_by": event.resolved_by,
        "updated_ts": event.ts,
    }


def _moved_change(event: DeliveryObligation, holder_id: str) -> tuple[str, dict[str, Any]]:
    """A bundle's resale in its period: the units the buyer's obligation took, with their
    escrow, bond and fee, leave the seller's."""
    return "moved", {
        "symbol": event.symbol,
        "provider_id": event.provider_id,
        "buyer_id": holder_id,
        "quantity": event.quantity,
        "amount": event.amount,
        "bond": event.bond,
        "fee": event.fee,
        "updated_ts": event.ts,
    }


def _bundle_owed(connection: AsyncConnection, row: dict[str, Any]) -> Any:
    """A token bundle's obligation: its first units insert the row, a top-up or a resale in
    the period adds to it. Units bought after a dispute's resolution settled the pair's
    obligation are a new one, owed afresh: the settled figures give way to it."""
    added = ("quantity", "amount", "bond", "fee")
    settled_by = ("delivered", "paid", "refund", "penalty", "resolved_by")
    statement = _insert(connection, deliveries).values(**row)
    settled = deliveries.c.status == "settled"
    changes: dict[str, Any] = {
        name: case(
            (settled, statement.excluded[name]),
            else_=deliveries.c[name] + statement.excluded[name],
        )
        for name in added
    }
    changes.update({name: case((settled, None), else_=deliveries.c[name]) for name in settled_by})
    changes["status"] = case((settled, statement.excluded.status), else_=deliveries.c.status)
    changes["window_ends"] = statement.excluded.window_ends
    changes["updated_ts"] = statement.excluded.updated_ts
    return statement.on_conflict_do_update(
        index_elements=["symbol", "provider_id", "buyer_id"], set_=changes
    )


def _bundle_drawn_change(event: BundleDrawn) -> tuple[str, dict[str, Any]]:
    """A bundle's draw-down: `delivered` counts tokens used, `paid` what the provider was paid
    net of its fee so far."""
    key = {"symbol": event.symbol, "provider_id": event.provider_id, "buyer_id": event.buyer_id}
    return "change", {
        **key,
        "status": "drawing",
        "delivered": event.used,
        "paid": func.coalesce(deliveries.c.paid, 0) + (event.paid - event.fee),
        "updated_ts": event.ts,
    }


def _bundle_settled_change(event: DeliverySettled, key: dict[str, Any]) -> dict[str, Any]:
    """A bundle's settlement: the tokens used, a resolution's last payment, the refund; the
    quantity left after resales in the period."""
    return {
        **key,
        "status": "settled",
        "quantity": event.quantity,
        "delivered": event.used,
        "paid": func.coalesce(deliveries.c.paid, 0) + (event.paid - event.fee),
        "refund": event.refund,
        "penalty": event.penalty,
        "resolved_by": event.resolved_by,
        "updated_ts": event.ts,
    }


@functools.cache
def _fields_touched(kind: type[AnyEvent]) -> tuple[tuple[str, ...], bool, bool]:
    """Which of the party fields an event type has, whether it names a symbol (asking a
    pydantic model for a field it lacks is slow), and whether it is a block's acceptance."""
    fields = kind.model_fields
    parties = ("account_id", "buyer_id", "seller_id", "provider_id")
    is_block = issubclass(kind, BlockAccepted)
    return tuple(name for name in parties if name in fields), "symbol" in fields, is_block


def _touched(
    event: AnyEvent,
    prior_hours: tuple[str, ...],
    accounts: set[str],
    holdings: set[tuple[str, str]],
) -> None:
    """Mark the accounts and (account, contract) holdings an event may have changed."""
    party_fields, has_symbol, is_block = _fields_touched(type(event))
    if not party_fields:
        # Names no account (a third of a busy market's events: its book changes).
        return
    involved = [value for name in party_fields if isinstance(value := getattr(event, name), str)]
    accounts.update(involved)
    # has_symbol says this event's type has a `symbol`, which mypy cannot see in the union.
    symbol = event.symbol if has_symbol else None  # type: ignore[union-attr]
    if not prior_hours and not is_block:
        # The common case, one contract: no list of contracts to build.
        if isinstance(symbol, str):
            holdings.update([(account, symbol) for account in involved])
        return
    symbols: list[str] = list(prior_hours)
    if isinstance(symbol, str):
        symbols.append(symbol)
    if is_block and isinstance(event, BlockAccepted):
        symbols.extend(event.symbols)
    holdings.update((account, s) for account in involved for s in symbols)


def _touched_by_cascade(
    event: StripCascaded, settled: Accounts, holdings: set[tuple[str, str]]
) -> None:
    """A cascade moves holders' positions, and every depositor's capacity, from the strip to
    each of its hours; depositors are not named in it, but keep their (emptied) balance of the
    strip in the settled state."""
    parties = {p.account_id for p in event.holders}
    parties.update(a for a, symbol in settled.capacity if symbol == event.symbol)
    holdings.update((a, s) for a in parties for s in [event.symbol, *event.hours])


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
        "symbols": None,
        "group_id": None,
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
