"""Live market data, private account updates and command outcomes, folded from the events topic.

One `MarketData` per API process reads every partition of the events topic from its start and
keeps, per contract, the depth (from `BookChanged`, whose per-contract `seq` lets a client check
that it missed nothing), recent trades, 1-minute and 1-hour candles and 24-hour statistics; per
account, the balances, open orders and delivery obligations (by the same money rules as the
risk stage and the ledger). Time is the log's: candles and the 24-hour window follow the `ts`
of the events, never the wall clock.

Subscribers get messages through bounded outboxes, so a slow one never slows the exchange: when
its outbox overflows it is sent one `resync` message with fresh snapshots instead of what it
missed, and if that keeps happening it is disconnected with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

import orjson
from pydantic import ValidationError

from api.keys import Principal
from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import (
    Catalogue,
    ContractSpec,
    cst_iso,
    family_of,
    is_family,
    parse_symbol,
    strip_hours,
    to_utc_ms,
)
from exchange.domain.market import listing_state
from exchange.domain.messages import (
    MARKET_WIDE_ACTIONS,
    AccountLimitsSet,
    AmendRejected,
    AmendRequested,
    AnyEvent,
    ApplicationInfoRequested,
    ApplicationRejected,
    ApplicationSupplemented,
    BlockAccepted,
    BookChanged,
    BundleDrawn,
    CancelAllRequested,
    CancelRejected,
    CapacityDeposited,
    CapacityRecalled,
    CapacityWithdrawn,
    ConcessionGranted,
    ContractStateChanged,
    DayAheadAuctionCompleted,
    DayAheadBidsCollected,
    DeliveryDisputed,
    DeliverySettled,
    DepositRejected,
    DiscountPoolFunded,
    EnterpriseRegistered,
    FeeConceded,
    FundsDeposited,
    FundsWithdrawn,
    GrantApplied,
    GrantApproved,
    ListingChanged,
    MarketControlRejected,
    MarketControlRequested,
    MeteringReported,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    OrderRejected,
    PlatformDiscounted,
    ProgrammeCreated,
    RequestRejected,
    StripCascaded,
    TradeExecuted,
    VoucherPolicySet,
    decode_event,
    scoped,
    split_over_hours,
)
from exchange.domain.performance import STANDARD, PerformanceTable
from exchange.domain.risk.requests import VOUCHER_POLICY, resolution_id
from exchange.log import CommandLog, TopicPartition
from exchange.pipeline import POLL_MAX_RECORDS, POLL_TIMEOUT_MS, Deduplicator, Topics

log = logging.getLogger(__name__)

RECENT_TRADES = 200
SUBSCRIBER_QUEUE = 1000
CLOSED_KEPT = 50_000
"""How many closed orders the fold remembers (about 500 bytes each: 25 MB), so an order that
closed while settlement is behind is still answered as accepted: far more than settlement is
ever behind by in orders, while it runs."""
MAX_RESYNCS = 3
"""Overflows allowed within RESYNC_WINDOW_S; one more and the subscriber is disconnected."""
RESYNC_WINDOW_S = 60.0
SNAPSHOT_LEVELS = 500
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
CST_OFFSET_MS = 8 * HOUR_MS
"""China Standard Time is UTC+8, with no daylight saving."""
INTERVALS = {"1m": MINUTE_MS, "1h": HOUR_MS}
CANDLES_KEPT = {"1m": 24 * 60 + 60, "1h": 24 * 35}
NO_CANDLES: Mapping[str, Sequence[Candle]] = MappingProxyType(dict.fromkeys(CANDLES_KEPT, ()))
"""The candles of a view before its first trade, shared by every such view."""

PUBLIC_CHANNELS = ("quote", "depth", "trades", "candles", "stats", "day_ahead")
PRIVATE_CHANNELS = ("orders", "fills", "balances", "obligations")
DEFAULT_CHANNELS = ("quote", "trades")


def _cst_day(ms: int) -> int:
    """The start (ms) of the China Standard Time day holding `ms`."""
    return (ms + CST_OFFSET_MS) // DAY_MS * DAY_MS - CST_OFFSET_MS


def volume_weighted_price(turnover: int, volume: int) -> int | None:
    """The average price (fen per unit-hour) of `volume` unit-hours that traded for `turnover`
    fen, rounded half up to the fen; None without volume. Both count a strip's every hour, so
    the average lies between the lowest and the highest price traded."""
    return (turnover + volume // 2) // volume if volume else None


@dataclass(slots=True)
class Candle:
    """Open, high, low, close, volume and turnover of one interval. The volume is in
    unit-hours (卡时/核时): an hour contract's quantity, a strip's quantity x its hours; the
    turnover is the fen paid for them (price x quantity x hours)."""

    start: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    turnover: int = 0
    trades: int = 0

    def add(self, price: int, quantity: int, hours: int = 1) -> None:
        """Fold one trade in (of a strip: `hours` hours of `quantity` cards at `price` each)."""
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += quantity * hours
        self.turnover += price * quantity * hours
        self.trades += 1

    def as_dict(self) -> dict[str, int]:
        """The candle's fields."""
        return {
            "start": self.start,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "turnover": self.turnover,
            "trades": self.trades,
        }


@dataclass
class ContractView:
    """What the market shows of one contract."""

    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    seq: int = 0
    # Until its first trade a view shares empty series: an empty bounded deque takes some
    # 770 bytes, and with a month of hours listed most views never see a trade before their
    # gate (docs/BENCHMARKS.md, "Listing horizon").
    trades: Sequence[TradeExecuted] = ()
    """The latest RECENT_TRADES trades, oldest first."""
    candles: Mapping[str, Sequence[Candle]] = field(default_factory=lambda: NO_CANDLES)
    """The latest candles of each interval (CANDLES_KEPT), oldest first."""
    updated_ts: int | None = None
    state: str | None = None
    """The lifecycle state matching last announced (`ContractStateChanged`); None before any."""

    def best_bid(self) -> tuple[int, int] | None:
        """(price, quantity) of the best bid."""
        if not self.bids:
            return None
        price = max(self.bids)
        return price, self.bids[price]

    def best_ask(self) -> tuple[int, int] | None:
        """(price, quantity) of the best ask."""
        if not self.asks:
            return None
        price = min(self.asks)
        return price, self.asks[price]

    def depth(self, levels: int) -> dict[str, list[list[int]]]:
        """Up to `levels` levels a side, best first."""
        bids = sorted(self.bids.items(), reverse=True)[:levels]
        asks = sorted(self.asks.items())[:levels]
        return {"bids": [list(b) for b in bids], "asks": [list(a) for a in asks]}

    def add_trade(self, trade: TradeExecuted) -> None:
        """Record a trade and fold it into the candle of each interval."""
        trades = self.trades
        if not isinstance(trades, deque):
            # The view's first trade: it gets series of its own.
            trades = self.trades = deque(maxlen=RECENT_TRADES)
            self.candles = {name: deque(maxlen=kept) for name, kept in CANDLES_KEPT.items()}
        trades.append(trade)
        hours = strip_hours(trade.symbol)
        for name, length in INTERVALS.items():
            start = trade.ts - trade.ts % length
            # A view that has traded holds its own deques (above), never the shared empties.
            series = cast(deque[Candle], self.candles[name])
            if series and series[-1].start == start:
                series[-1].add(trade.price, trade.quantity, hours)
            else:
                candle = Candle(start, trade.price, trade.price, trade.price, trade.price)
                candle.add(trade.price, trade.quantity, hours)
                series.append(candle)

    def stats(self, now_ms: int) -> dict[str, Any]:
        """Statistics of the 24 hours of log time up to `now_ms`, from the 1-minute candles."""
        since = now_ms - DAY_MS
        window = [c for c in self.candles["1m"] if c.start + MINUTE_MS > since]
        last = self.trades[-1].price if self.trades else None
        if not window:
            return {
                "window_end": now_ms,
                "open": None,
                "high": None,
                "low": None,
                "last": last,
                "change": None,
                "volume": 0,
                "turnover": 0,
                "trades": 0,
                "vwap": None,
            }
        volume = sum(c.volume for c in window)
        turnover = sum(c.turnover for c in window)
        return {
            "window_end": now_ms,
            "open": window[0].open,
            "high": max(c.high for c in window),
            "low": min(c.low for c in window),
            "last": last,
            "change": None if last is None else last - window[0].open,
            "volume": volume,
            "turnover": turnover,
            "trades": sum(c.trades for c in window),
            "vwap": volume_weighted_price(turnover, volume),
        }


@dataclass(slots=True)
class OrderState:
    """An account's order as its private stream shows it."""

    order_id: str
    account_id: str
    symbol: str
    side: str
    price: int
    quantity: int
    client_order_id: str | None
    filled: int = 0
    status: str = "open"
    reason: str | None = None
    ts: int = 0
    accepted_ts: int = 0
    """When the risk stage accepted it (log time); `ts` is its latest change."""

    def as_message(self) -> dict[str, Any]:
        """The `order` message."""
        return {
            "type": "order",
            "order_id": self.order_id,
            "client_order_id": self.client_order_id,
            "symbol": self.symbol,
            "side": self.side,
            "price": self.price,
            "quantity": self.quantity,
            "filled": self.filled,
            "status": self.status,
            "reason": self.reason,
            "ts": self.ts,
        }


@dataclass
class Decision:
    """What matching decided about an order someone waits for (`POST /v1/orders?answer=result`):
    its fills, and whether it rests, filled or was cancelled."""

    done: asyncio.Future[dict[str, Any]]
    order: OrderState | None = None
    fills: list[dict[str, int | str]] = field(default_factory=list)

    def decide(self, status: str, reason: str | None = None) -> None:
        """Answer the waiter once: the order's state after matching acted on it."""
        if self.done.done() or self.order is None:
            return
        order = self.order
        self.done.set_result(
            {
                "status": status,
                "filled": order.filled,
                "remaining": 0 if status != "open" else order.quantity - order.filled,
                "reason": reason,
                "fills": list(self.fills),
            }
        )


class Shared(dict[str, Any]):
    """A message offered to many subscribers: encoded once, by whichever sends it first,
    rather than once per subscriber. Not to be changed once offered."""

    __slots__ = ("_text",)

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(message)
        self._text: str | None = None

    def text(self) -> str:
        """The message's JSON."""
        if self._text is None:
            self._text = orjson.dumps(self).decode()
        return self._text


def encode_message(message: dict[str, Any]) -> str:
    """A stream message's JSON (a `Shared` one is encoded only once)."""
    if isinstance(message, Shared):
        return message.text()
    return orjson.dumps(message).decode()


class Subscriber:
    """One stream client: what it follows and its bounded outbox."""

    def __init__(self, queue_size: int = SUBSCRIBER_QUEUE) -> None:
        self.symbols: dict[str, set[str]] = {}
        """Channels followed, per contract."""
        self.private: set[str] = set()
        self.principal: Principal | None = None
        """The key it authenticated with (MarketData.authenticate), if any."""
        self.ends_without_key = False
        """True for a stream that cannot authenticate again (SSE): it ends when its key is
        revoked, rather than go on without its private channels."""
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self.dropped_reason: str | None = None
        self.resyncs: list[float] = []

    def follows(self, symbol: str, channel: str) -> bool:
        """True if the subscriber follows `channel` of `symbol`."""
        channels = self.symbols.get(symbol)
        return channels is not None and channel in channels


Outcome = (
    OrderAccepted
    | OrderRejected
    | OrderCancelled
    | CancelRejected
    | FundsDeposited
    | CapacityDeposited
    | DepositRejected
    | OrderAmended
    | AmendRejected
    | BlockAccepted
    | CancelAllRequested
    | MarketControlRequested
    | MarketControlRejected
    | ContractStateChanged
    | RequestRejected
    | FundsWithdrawn
    | CapacityWithdrawn
    | MeteringReported
    | BundleDrawn
    | DeliveryDisputed
    | CapacityRecalled
    | DeliverySettled
    | ProgrammeCreated
    | GrantApproved
    | ConcessionGranted
    | DiscountPoolFunded
    | AccountLimitsSet
    | EnterpriseRegistered
    | VoucherPolicySet
    | GrantApplied
    | ApplicationInfoRequested
    | ApplicationSupplemented
    | ApplicationRejected
)


class MarketData:
    """Folds the events topic; answers market queries; streams; resolves waiting commands."""

    def __init__(
        self,
        command_log: CommandLog,
        topics: Topics,
        catalogue: Catalogue,
        performance: PerformanceTable = STANDARD,
    ) -> None:
        self.log = command_log
        self.topics = topics
        self.catalogue = catalogue
        self.performance = performance
        self.views = {symbol: self._listed_view(symbol) for symbol in catalogue.symbols}
        self.operator_listed: set[str] = set()
        """Contracts operators listed that the catalogue does not list (`ListingChanged`)."""
        self.operator_delisted: dict[str, str] = {}
        """Contracts an operator delisted and has not listed again, with why."""
        self.bands: dict[str, int] = {}
        """Price bands operators set (fen, 0: none), by contract or family (`set_band`)."""
        self._bands_before: dict[int, tuple[str, int, dict[str, int | None]]] = {}
        """Per events partition, the latest `set_band` (target, log time) and the bands it
        replaced, put back should matching refuse it (at that time, in that partition)."""
        self.subscribers: set[Subscriber] = set()
        self.queue_size = SUBSCRIBER_QUEUE
        self.accounts = Accounts(catalogue.rules)
        self.orders: dict[str, OrderState] = {}
        """Open orders, for the private `order` messages."""
        self.day_ahead_collected: set[str] = set()
        """The day-ahead and intraday auctions (by date or time) some partition collected bids
        for, as this fold saw: with `now_ms`, what tells an auction clearing from one not held
        while settlement is behind."""
        self.closed: OrderedDict[str, OrderState] = OrderedDict()
        """The latest CLOSED_KEPT orders that filled, were cancelled or expired, oldest first:
        with `orders`, what the API knows of an order it saw accepted before settlement
        records it (`accepted_order`)."""
        self.obligations: dict[tuple[str, str], list[int]] = {}
        """(seller, symbol) -> [units sold, payout in fen]."""
        self.cascaded_at: dict[str, int] = {}
        """Strips that became positions in their hours, with the log time they did: at their
        planned time, or earlier when an operator delisted them."""
        self.now_ms = 0
        """The latest log time seen: the end of the 24-hour statistics window."""
        self._waiters: dict[str, list[asyncio.Future[Outcome]]] = {}
        self._answers: dict[asyncio.Future[Outcome], Callable[[Outcome], bool]] = {}
        """The waiters that take only their own answer (`expect`'s `answers`)."""
        self._deciding: dict[int, tuple[str, str, frozenset[str]]] = {}
        """Per events partition, an operator's halt or resume that matching recorded and a
        request waits on: the contract, its `control_key`, and the states that say matching
        carried it out. Its decision follows in the same partition, before any other input."""
        self._decisions: dict[str, Decision] = {}
        """Orders whose matching outcome a request waits for, by order id."""
        self._dedup = Deduplicator()
        self._private: dict[str, set[Subscriber]] = {}
        self._keyed: dict[str, set[Subscriber]] = {}
        """Subscribers by the id of the key they authenticated with."""
        self.trade_counts: dict[str, int] = {}
        self.trade_volumes: dict[str, int] = {}
        self.ready = asyncio.Event()
        self.positions: dict[int, int] = {}
        """The next offset to fold, per events partition (`/v1/health` reports it)."""
        self.day_ahead: dict[str, dict[str, Any]] = {}
        """Per contract, the latest day-ahead auction's result for it (the `day_ahead`
        channel's message)."""
        self.book_listeners: list[Callable[[str], None]] = []
        """Called with the symbol after each book change; must return at once (they run inside
        the fold, so a slow one would hold up every subscriber)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the events topic from its start until `stop` is set."""
        consumer = await self.log.consumer()
        partitions = [
            TopicPartition(self.topics.events, p) for p in range(self.topics.market_partitions)
        ]
        try:
            consumer.assign(partitions)
            for tp in partitions:
                consumer.seek(tp, 0)
            ends = {tp: await consumer.end_offset(tp) for tp in partitions}
            while not stop.is_set():
                records = await consumer.getmany(POLL_TIMEOUT_MS, POLL_MAX_RECORDS)
                for record in records:
                    self.positions[record.partition] = record.offset + 1
                    try:
                        event = decode_event(record.value)
                    except ValidationError:
                        continue
                    self.apply(event, record.partition)
                if not self.ready.is_set():
                    positions = [await consumer.position(tp) for tp in partitions]
                    if all(p >= ends[tp] for p, tp in zip(positions, partitions, strict=True)):
                        self.ready.set()
        finally:
            await consumer.close()

    def spec(self, symbol: str) -> ContractSpec | None:
        """The contract, if the catalogue or an operator lists it."""
        if symbol in self.operator_listed:
            return parse_symbol(symbol)
        return self.catalogue.get(symbol)

    def capacity_state(self, symbol: str) -> dict[str, str | None]:
        """What a provider may do with unsold capacity of a contract at the latest log time:
        sell or withdraw it until the contract's gate (`open`), nothing after (`gate_closed`:
        risk refuses the withdrawal, the book is closed, and no obligation is made of it), nor
        once the exchange lists the contract no more (`not_listed`)."""
        spec = self.spec(symbol)
        if spec is None:
            return {"state": "not_listed", "gate": None}
        gate = self.catalogue.retires_at(spec)
        return {
            "state": "open" if self.listing_ms < gate else "gate_closed",
            "gate": cst_iso(gate),
        }

    def band(self, symbol: str) -> int:
        """A contract's price band (fen, 0: none): its own, else its family's, else the rules'."""
        family = self.bands.get(family_of(symbol), self.catalogue.rules.band)
        return self.bands.get(symbol, family)

    def _apply_band(
        self, event: MarketControlRequested | MarketControlRejected, read_from: int
    ) -> None:
        """Follow matching's bands: a family's band replaces its contracts' own (as matching
        sets every listed book of the family), and a band matching refused is put back."""
        if event.action != "set_band":
            return
        target = event.symbol
        if isinstance(event, MarketControlRejected):
            pending = self._bands_before.get(read_from)
            if pending is None or pending[:2] != (target, event.ts):
                return  # refused before matching (risk): it never changed a band
            del self._bands_before[read_from]
            for name, width in pending[2].items():
                if width is None:
                    self.bands.pop(name, None)
                else:
                    self.bands[name] = width
            return
        replaced = [s for s in self.bands if family_of(s) == target] if is_family(target) else []
        replacing = {name: self.bands.get(name) for name in [target, *replaced]}
        self._bands_before[read_from] = (target, event.ts, replacing)
        for symbol in replaced:
            del self.bands[symbol]
        self.bands[target] = event.band or 0

    def _listed_view(self, symbol: str) -> ContractView:
        """A new view of a listed contract, in the state matching lists it in (`listing_state`)
        until matching announces one: it announces none for the static contracts, listed
        before it reads the log, nor for a rolled one until a record reaches its partition.
        A rolled hour waits for its day's day-ahead auction while that auction's gate is
        ahead; an operator's listing never does."""
        rules = self.catalogue.rules
        if self.catalogue.is_static(symbol):
            awaits_day_ahead = rules.day_ahead_gate_ms is not None
        else:
            spec = self.catalogue.get(symbol)
            gate = (
                None
                if spec is None or spec.is_term
                else rules.day_ahead_gate(to_utc_ms(spec.delivery_start))
            )
            awaits_day_ahead = gate is not None and gate > self.listing_ms
        return ContractView(state=listing_state(rules.pre_open, awaits_day_ahead))

    def view(self, symbol: str) -> ContractView | None:
        """The view of a contract: a static one, one already seen in an event, or a rolled one
        listed at the latest log time (its view made now); None for any other symbol."""
        view = self.views.get(symbol)
        if view is None and (
            self.catalogue.listed(symbol, self.listing_ms) is not None
            or symbol in self.operator_listed
        ):
            view = self.views[symbol] = self._listed_view(symbol)
        return view

    @property
    def listing_ms(self) -> int:
        """The time listings are read at: the latest log time, or the wall clock before the
        log has any record (a new exchange lists today's hours, not those of 1970)."""
        return self.now_ms or time.time_ns() // 1_000_000

    def listed(self) -> list[ContractSpec]:
        """Every contract listed at the latest log time, static, rolled and listed by
        operators, by symbol."""
        at = self.listing_ms
        listed = self.catalogue.listed_at(at)
        extra = [parse_symbol(symbol) for symbol in self.operator_listed]
        extra = [spec for spec in extra if self.catalogue.retires_at(spec) > at]
        return sorted(listed + extra, key=lambda spec: spec.symbol)

    def per_std(self, symbol: str, price: int | None) -> int | None:
        """A contract price as a price per standard card-hour (None for non-cards)."""
        spec = self.spec(symbol)
        if price is None or spec is None:
            return None
        return self.performance.price_per_standard(price, spec.resource_class.code)

    def apply(self, event: AnyEvent, read_from: int) -> None:
        """Fold one event read from partition `read_from` into the views; wake its waiters."""
        if not self._dedup.is_new(read_from, event.event_id):
            return
        self.now_ms = max(self.now_ms, event.ts)
        symbol = getattr(event, "symbol", None)
        if (
            isinstance(symbol, str)
            and symbol not in self.views
            and self.catalogue.get(symbol) is not None
        ):
            # Rolled contracts are listed as time goes on: a view starts with the first event.
            self.views[symbol] = self._listed_view(symbol)
        if isinstance(event, ListingChanged) and event.listed:
            if self.catalogue.get(event.symbol) is None:
                self.operator_listed.add(event.symbol)
            self.operator_delisted.pop(event.symbol, None)
            self.views.setdefault(event.symbol, self._listed_view(event.symbol))
        elif isinstance(event, ListingChanged):
            # In the risk stage's words (exchange/domain/risk/outcomes.py).
            why = f": {event.reason}" if event.reason else ""
            self.operator_delisted[event.symbol] = (
                f"contract {event.symbol!r} was delisted by {event.operator_id}{why}"
            )
        if isinstance(event, MarketControlRequested | MarketControlRejected):
            self._apply_band(event, read_from)
        if isinstance(event, BookChanged):
            view = self.views.get(event.symbol)
            if view is not None:
                self._apply_book(view, event)
            self._rested(event.symbol)
        elif isinstance(event, TradeExecuted):
            self._apply_trade(event)
        elif isinstance(event, ContractStateChanged):
            view = self.views.get(event.symbol)
            if view is not None:
                view.state = event.state
        elif isinstance(event, DayAheadAuctionCompleted):
            self._apply_day_ahead(event)
        elif isinstance(event, DayAheadBidsCollected):
            self.day_ahead_collected.add(event.day)
        elif isinstance(event, OrderAccepted):
            self.accounts.apply(event)
            order = OrderState(
                event.order_id,
                event.account_id,
                event.symbol,
                event.side,
                event.price,
                event.quantity,
                event.client_order_id,
                ts=event.ts,
                accepted_ts=event.ts,
            )
            self.orders[event.order_id] = order
            decision = self._decisions.get(event.order_id)
            if decision is not None:
                decision.order = order
            self._tell(event.account_id, "orders", order.as_message())
            self._tell_balance(event.account_id, event.symbol, event.ts)
        elif isinstance(event, OrderRejected):
            rejected = OrderState(
                event.order_id,
                event.account_id,
                event.symbol,
                event.side,
                event.price,
                event.quantity,
                event.client_order_id,
                status="rejected",
                reason=event.reason.value,
                ts=event.ts,
            )
            self._tell(event.account_id, "orders", rejected.as_message())
        elif isinstance(event, OrderCancelled):
            self.accounts.apply(event)
            cancelled = self.orders.pop(event.order_id, None)
            if cancelled is not None:
                self._close(cancelled)
                cancelled.status, cancelled.reason, cancelled.ts = (
                    "cancelled",
                    event.reason.value,
                    event.ts,
                )
                self._tell(event.account_id, "orders", cancelled.as_message())
            decision = self._decisions.get(event.order_id)
            if decision is not None:
                decision.decide("cancelled", event.reason.value)
            self._tell_balance(event.account_id, event.symbol, event.ts)
        elif isinstance(
            event,
            FundsDeposited
            | CapacityDeposited
            | FundsWithdrawn
            | CapacityWithdrawn
            | FeeConceded
            | PlatformDiscounted,
        ):
            self.accounts.apply(event)
            symbol = (
                event.symbol if isinstance(event, CapacityDeposited | CapacityWithdrawn) else None
            )
            self._tell_balance(event.account_id, symbol, event.ts)
        elif isinstance(event, DeliverySettled):
            self.accounts.apply(event)
            for account_id in (event.provider_id, event.buyer_id):
                self._tell_balance(account_id, event.symbol, event.ts)
        elif isinstance(
            event,
            BlockAccepted
            | GrantApproved
            | ProgrammeCreated
            | ConcessionGranted
            | DiscountPoolFunded,
        ):
            self.accounts.apply(event)
        elif isinstance(event, AmendRequested | OrderAmended | AmendRejected | OrderReduced):
            self._apply_hold_change(event)
        elif isinstance(event, StripCascaded):
            self._apply_strip_cascade(event)
        key = self._decided_key(event, read_from)
        if key is not None and key in self._waiters:
            self._answer(key, event)  # type: ignore[arg-type]

    def _decided_key(self, event: AnyEvent, read_from: int) -> str | None:
        """The key of the waiters `event` answers (`_outcome_key`), except that a control of
        one contract is answered by matching's decision, not by matching recording it: the
        refusal that follows the record of one it refused (recorded acting on no contract),
        and for one that changes the contract's state, the new state
        (`ContractStateChanged`)."""
        key = _outcome_key(event)
        deciding = self._deciding.get(read_from)
        if isinstance(event, MarketControlRequested):
            if key is None or key not in self._waiters:
                return key
            if event.contracts == [] and event.action not in MARKET_WIDE_ACTIONS:
                self._deciding[read_from] = (event.symbol, key, frozenset())
                return None
            settles = _CONTROL_SETTLES.get(event.action)
            if settles is not None:
                self._deciding[read_from] = (event.symbol, key, settles)
                return None
        elif deciding is None:
            return key
        elif isinstance(event, ContractStateChanged):
            symbol, waiting, settles = deciding
            if event.symbol == symbol and event.state in settles:
                del self._deciding[read_from]
                return waiting
        elif isinstance(event, MarketControlRejected) and key == deciding[1]:
            del self._deciding[read_from]
        return key

    def _apply_strip_cascade(self, event: StripCascaded) -> None:
        """A strip became positions in its hours: balances move with them, and what each
        provider sold of the strip is owed in every hour (its payout split as the escrow)."""
        strip = event.symbol
        self.cascaded_at[strip] = event.ts
        # Capacity deposited for the strip moves too: every account holding any is told.
        depositors = {a for a, s in self.accounts.capacity if s == strip}
        self.accounts.apply(event)
        for (provider, symbol), (units, payout) in sorted(self.obligations.items()):
            if symbol != strip:
                continue
            del self.obligations[(provider, symbol)]
            for hour, part in zip(
                event.hours, split_over_hours(payout, len(event.hours)), strict=True
            ):
                owed = self.obligations.setdefault((provider, hour), [0, 0])
                owed[0] += units
                owed[1] += part
        told = {p.account_id for p in [*event.holders, *event.providers]} | depositors
        for account_id in sorted(told):
            self._tell_balance(account_id, None, event.ts)

    def _apply_hold_change(
        self, event: AmendRequested | OrderAmended | AmendRejected | OrderReduced
    ) -> None:
        """Amends and self-trade reductions."""
        self.accounts.apply(event)
        account_id: str = getattr(event, "account_id", "")
        symbol: str | None = getattr(event, "symbol", None)
        order = self.orders.get(getattr(event, "order_id", ""))
        remaining = getattr(event, "remaining", None)
        if order is not None and isinstance(remaining, int):
            order.price = getattr(event, "price", order.price)
            order.quantity = order.filled + remaining
            order.ts = event.ts
            if not remaining:
                order.status = "cancelled"
                self._close(self.orders.pop(order.order_id))
            self._tell(account_id, "orders", order.as_message())
        if account_id:
            self._tell_balance(account_id, symbol, event.ts)

    def _apply_book(self, view: ContractView, event: BookChanged) -> None:
        for side, changes in ((view.bids, event.bids), (view.asks, event.asks)):
            for price, quantity in changes:
                if quantity:
                    side[price] = quantity
                else:
                    side.pop(price, None)
        view.seq = event.seq
        view.updated_ts = event.ts
        for listener in self.book_listeners:
            listener(event.symbol)
        self._publish(event.symbol, "quote", self.quote_message(event.symbol, event.ts))
        self._publish(
            event.symbol,
            "depth",
            {
                "type": "depth",
                "symbol": event.symbol,
                "seq": event.seq,
                "bids": [list(level) for level in event.bids],
                "asks": [list(level) for level in event.asks],
                "ts": event.ts,
            },
        )

    def _apply_day_ahead(self, completed: DayAheadAuctionCompleted) -> None:
        """Publish each contract-hour's day-ahead clearing price and volume."""
        for symbol, price in completed.prices.items():
            message = {
                "type": "day_ahead",
                "symbol": symbol,
                "date": completed.day,
                "price": price,
                "price_per_std": self.per_std(symbol, price),
                "volume": completed.volumes.get(symbol, 0),
                "ts": completed.ts,
            }
            self.day_ahead[symbol] = message
            self._publish(symbol, "day_ahead", message)

    def _apply_trade(self, trade: TradeExecuted) -> None:
        view = self.views.get(trade.symbol)
        if view is not None:
            view.add_trade(trade)
            symbol = trade.symbol
            self.trade_counts[symbol] = self.trade_counts.get(symbol, 0) + 1
            self.trade_volumes[symbol] = self.trade_volumes.get(symbol, 0) + trade.quantity
            self._publish(symbol, "trades", self.trade_message(trade))
            for interval in INTERVALS:
                self._publish(symbol, "candles", self.candle_message(symbol, interval))
            self._publish(symbol, "stats", self.stats_message(symbol))
        buy = self.orders.get(trade.buy_order_id)
        sell = self.orders.get(trade.sell_order_id)
        self.accounts.apply(trade)
        for order, side in ((buy, "buy"), (sell, "sell")):
            account = trade.buyer_id if side == "buy" else trade.seller_id
            order_id = trade.buy_order_id if side == "buy" else trade.sell_order_id
            self._tell(
                account,
                "fills",
                {
                    "type": "fill",
                    "trade_id": trade.trade_id,
                    "order_id": order_id,
                    "symbol": trade.symbol,
                    "side": side,
                    "price": trade.price,
                    "price_per_std": self.per_std(trade.symbol, trade.price),
                    "quantity": trade.quantity,
                    "liquidity": _liquidity(trade.aggressor, side),
                    "ts": trade.ts,
                },
            )
            if order is not None:
                order.filled += trade.quantity
                order.ts = trade.ts
                decision = self._decisions.get(order_id)
                if decision is not None:
                    decision.fills.append(
                        {
                            "trade_id": trade.trade_id,
                            "price": trade.price,
                            "quantity": trade.quantity,
                        }
                    )
                if order.filled >= order.quantity:
                    order.status = "filled"
                    self._close(self.orders.pop(order.order_id))
                    if decision is not None:
                        decision.decide("filled")
                self._tell(account, "orders", order.as_message())
            self._tell_balance(account, trade.symbol, trade.ts)
        owed = self.obligations.setdefault((trade.seller_id, trade.symbol), [0, 0])
        owed[0] += trade.quantity
        owed[1] += trade.price * trade.quantity * strip_hours(trade.symbol)
        self._tell(
            trade.seller_id, "obligations", self.obligation_message(trade.seller_id, trade.symbol)
        )

    def _close(self, order: OrderState) -> None:
        """Remember an order that closed, forgetting the oldest past CLOSED_KEPT."""
        self.closed[order.order_id] = order
        if len(self.closed) > CLOSED_KEPT:
            self.closed.popitem(last=False)

    def accepted_order(self, order_id: str) -> OrderState | None:
        """An order of one contract the risk stage accepted, as this fold of the log saw it:
        open, or among the latest CLOSED_KEPT to close; None if neither."""
        return self.orders.get(order_id) or self.closed.get(order_id)

    def expect(
        self, key: str, answers: Callable[[Outcome], bool] | None = None
    ) -> asyncio.Future[Outcome]:
        """A future for the outcome of the command this key names (`order_key`,
        `deposit_key`, `request_key`, ...).

        Register before sending the command, so the outcome cannot arrive unseen. With
        `answers`, the future takes only an outcome it accepts, and each outcome answers one
        such waiter, the earliest: an amend and a cancel of one order (or two amends) sent at
        once wait under the same key, and each must get its own decision, not the first one.
        """
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        if answers is not None:
            self._answers[future] = answers
        return future

    def _answer(self, key: str, event: Outcome) -> None:
        """Resolve the waiters of `key` that `event` answers: every one that takes any
        outcome, and the earliest of those that take only their own which accepts it."""
        kept: list[asyncio.Future[Outcome]] = []
        answered = False
        for future in self._waiters.pop(key):
            accepts = self._answers.get(future)
            if future.done():
                continue
            if accepts is None:
                future.set_result(event)
            elif not answered and accepts(event):
                future.set_result(event)
                answered = True
            else:
                kept.append(future)
        if kept:
            self._waiters[key] = kept

    def expect_decision(self, order_id: str) -> Decision:
        """A waiter for what matching decides about an order: register before sending it."""
        decision = Decision(asyncio.get_running_loop().create_future())
        self._decisions[order_id] = decision
        return decision

    def forget_decision(self, order_id: str) -> None:
        """Stop waiting for an order's decision."""
        self._decisions.pop(order_id, None)

    def _rested(self, symbol: str) -> None:
        """A book change closes matching's outputs for the input that caused it (it comes after
        that input's trades and cancels), so an accepted order of this contract still open
        now rests in the book."""
        for decision in self._decisions.values():
            order = decision.order
            if order is not None and order.symbol == symbol and order.status == "open":
                decision.decide("open")

    def forget(self, key: str, future: asyncio.Future[Outcome]) -> None:
        """Stop waiting (after a timeout)."""
        self._answers.pop(future, None)
        waiting = self._waiters.get(key)
        if waiting and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._waiters[key]

    def subscriber(self) -> Subscriber:
        """A new subscriber with this market's outbox size."""
        return Subscriber(self.queue_size)

    def subscribe(
        self, subscriber: Subscriber, symbols: Iterable[str], channels: Iterable[str]
    ) -> list[str]:
        """Follow channels of contracts (sending each new one's snapshot); returns unknown ones."""
        wanted = [c for c in channels if c in PUBLIC_CHANNELS]
        unknown: list[str] = []
        for symbol in symbols:
            if self.view(symbol) is None:
                if symbol not in unknown:
                    unknown.append(symbol)
                continue
            followed = subscriber.symbols.setdefault(symbol, set())
            for channel in wanted:
                if channel in followed:
                    continue
                followed.add(channel)
                for message in self._channel_snapshot(symbol, channel):
                    self.offer(subscriber, message)
        self.subscribers.add(subscriber)
        return unknown

    def unsubscribe(
        self, subscriber: Subscriber, symbols: Iterable[str], channels: Iterable[str] | None
    ) -> None:
        """Stop following channels (all if None) of contracts."""
        for symbol in symbols:
            followed = subscriber.symbols.get(symbol)
            if followed is None:
                continue
            if channels is None:
                followed.clear()
            else:
                followed.difference_update(channels)
            if not followed:
                del subscriber.symbols[symbol]

    def authenticate(self, subscriber: Subscriber, principal: Principal) -> None:
        """Let the subscriber follow the private channels of the key's account, until the key
        is revoked (`revoke`)."""
        subscriber.principal = principal
        self._keyed.setdefault(principal.key_id, set()).add(subscriber)

    def keys_in_use(self) -> set[str]:
        """The ids of the keys stream subscribers authenticated with."""
        return set(self._keyed)

    def revoke(self, key_ids: Iterable[str], reason: str) -> None:
        """Close at once the private streams of keys that no longer verify: their subscribers
        lose the key and its private channels and are told `reason`; an SSE stream that
        followed private channels ends."""
        for key_id in key_ids:
            for subscriber in self._keyed.pop(key_id, set()):
                followed_private = bool(subscriber.private)
                self._forget_private(subscriber)
                subscriber.principal = None
                subscriber.private.clear()
                if not subscriber.ends_without_key:
                    message = {"type": "error", "code": "unauthorized", "message": reason}
                    self.offer(subscriber, message)
                elif followed_private:
                    self._end(subscriber, reason)

    def subscribe_private(self, subscriber: Subscriber, channels: Iterable[str]) -> None:
        """Follow the private channels of the subscriber's account, starting with its snapshot."""
        if subscriber.principal is None:
            raise ValueError("only a subscriber with an API key follows private channels")
        account = subscriber.principal.account_id
        fresh = [c for c in channels if c in PRIVATE_CHANNELS and c not in subscriber.private]
        if not fresh:
            return
        subscriber.private.update(fresh)
        self._private.setdefault(account, set()).add(subscriber)
        self.subscribers.add(subscriber)
        self.offer(subscriber, self.account_snapshot(account))

    def unsubscribe_private(self, subscriber: Subscriber, channels: Iterable[str] | None) -> None:
        """Stop following private channels (all if None)."""
        if channels is None:
            subscriber.private.clear()
        else:
            subscriber.private.difference_update(channels)

    def snapshot(self, subscriber: Subscriber, symbols: Iterable[str]) -> None:
        """Send fresh depth snapshots (a client that detected a gap asks for this)."""
        for symbol in symbols:
            if symbol in self.views:
                self.offer(subscriber, self.depth_snapshot(symbol))

    def drop(self, subscriber: Subscriber) -> None:
        """Forget a subscriber (disconnected or too slow)."""
        self.subscribers.discard(subscriber)
        self._forget_private(subscriber)
        if subscriber.principal is not None:
            keyed = self._keyed.get(subscriber.principal.key_id)
            if keyed is not None:
                keyed.discard(subscriber)
                if not keyed:
                    del self._keyed[subscriber.principal.key_id]

    def _forget_private(self, subscriber: Subscriber) -> None:
        """Stop telling the subscriber its account's private updates."""
        if subscriber.principal is not None:
            followers = self._private.get(subscriber.principal.account_id)
            if followers is not None:
                followers.discard(subscriber)
                if not followers:
                    del self._private[subscriber.principal.account_id]

    def _end(self, subscriber: Subscriber, reason: str) -> None:
        """Drop the subscriber, and wake its sender at once to close with `reason`."""
        subscriber.dropped_reason = reason
        self.drop(subscriber)
        with contextlib.suppress(asyncio.QueueFull):  # a full outbox wakes it anyway
            subscriber.queue.put_nowait({"type": "error", "message": reason})

    def _channel_snapshot(self, symbol: str, channel: str) -> list[dict[str, Any]]:
        if channel == "quote":
            return [self.quote_message(symbol, None)]
        if channel == "depth":
            return [self.depth_snapshot(symbol)]
        if channel == "trades":
            return [self.trade_message(t) for t in list(self.views[symbol].trades)[-10:]]
        if channel == "candles":
            return [self.candle_message(symbol, i) for i in INTERVALS if self.views[symbol].trades]
        if channel == "day_ahead":
            latest = self.day_ahead.get(symbol)
            return [] if latest is None else [latest]
        return [self.stats_message(symbol)]

    def _publish(self, symbol: str, channel: str, message: dict[str, Any]) -> None:
        shared: Shared | None = None
        for subscriber in list(self.subscribers):
            if subscriber.follows(symbol, channel):
                if shared is None:
                    shared = Shared(message)
                self.offer(subscriber, shared)

    def _tell(self, account_id: str, channel: str, message: dict[str, Any]) -> None:
        for subscriber in list(self._private.get(account_id, ())):
            if channel in subscriber.private:
                self.offer(subscriber, message)

    def _tell_balance(self, account_id: str, symbol: str | None, ts: int) -> None:
        if account_id in self._private:
            self._tell(account_id, "balances", self.balance_message(account_id, symbol, ts))

    def offer(self, subscriber: Subscriber, message: dict[str, Any]) -> None:
        """Queue a message for a subscriber; on overflow, resync or drop it."""
        if subscriber.dropped_reason is not None:
            return
        try:
            subscriber.queue.put_nowait(message)
        except asyncio.QueueFull:
            self._overflow(subscriber)

    def _overflow(self, subscriber: Subscriber) -> None:
        """Replace what a slow subscriber missed by one resync message, or disconnect it."""
        size = subscriber.queue.maxsize
        now = time.monotonic()
        subscriber.resyncs = [t for t in subscriber.resyncs if now - t < RESYNC_WINDOW_S]
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        if len(subscriber.resyncs) >= MAX_RESYNCS:
            subscriber.dropped_reason = (
                f"too slow: outbox of {size} messages overflowed {MAX_RESYNCS + 1} times "
                f"in {RESYNC_WINDOW_S:.0f}s"
            )
            self.drop(subscriber)
            log.info("disconnecting a stream client: %s", subscriber.dropped_reason)
            return
        subscriber.resyncs.append(now)
        subscriber.queue.put_nowait(self.resync_message(subscriber, size))

    def resync_message(self, subscriber: Subscriber, size: int) -> dict[str, Any]:
        """Fresh snapshots of everything a subscriber follows, replacing what it missed."""
        snapshots: list[dict[str, Any]] = []
        for symbol in sorted(subscriber.symbols):
            for channel in PUBLIC_CHANNELS:
                if channel in subscriber.symbols[symbol] and channel != "trades":
                    snapshots.extend(self._channel_snapshot(symbol, channel))
        if subscriber.private and subscriber.principal is not None:
            snapshots.append(self.account_snapshot(subscriber.principal.account_id))
        return {
            "type": "resync",
            "reason": f"fell behind: outbox of {size} messages was full; messages were dropped",
            "snapshots": snapshots,
        }

    def quote_message(self, symbol: str, ts: int | None) -> dict[str, Any]:
        """Best bid and ask of a contract, with their prices per standard card-hour."""
        view = self.views[symbol]
        bid = view.best_bid()
        ask = view.best_ask()
        return {
            "type": "quote",
            "symbol": symbol,
            "seq": view.seq,
            "bid": None if bid is None else {"price": bid[0], "quantity": bid[1]},
            "ask": None if ask is None else {"price": ask[0], "quantity": ask[1]},
            "bid_per_std": self.per_std(symbol, None if bid is None else bid[0]),
            "ask_per_std": self.per_std(symbol, None if ask is None else ask[0]),
            "ts": ts,
        }

    def depth_snapshot(self, symbol: str) -> dict[str, Any]:
        """The whole book (up to SNAPSHOT_LEVELS a side) at its current `seq`."""
        view = self.views[symbol]
        return {
            "type": "depth_snapshot",
            "symbol": symbol,
            "seq": view.seq,
            **view.depth(SNAPSHOT_LEVELS),
            "ts": view.updated_ts,
        }

    def trade_message(self, trade: TradeExecuted) -> dict[str, Any]:
        """A trade, as streamed."""
        return {
            "type": "trade",
            "symbol": trade.symbol,
            "trade_id": trade.trade_id,
            "price": trade.price,
            "price_per_std": self.per_std(trade.symbol, trade.price),
            "quantity": trade.quantity,
            "aggressor": trade.aggressor,
            "ts": trade.ts,
        }

    def candle_message(self, symbol: str, interval: str) -> dict[str, Any]:
        """The latest candle of an interval."""
        series = self.views[symbol].candles[interval]
        return {
            "type": "candle",
            "symbol": symbol,
            "interval": interval,
            **(series[-1].as_dict() if series else {}),
        }

    def candles(self, symbol: str, interval: str, limit: int) -> list[dict[str, int]]:
        """The latest `limit` candles of an interval, oldest first."""
        series = list(self.views[symbol].candles[interval])[-limit:]
        return [c.as_dict() for c in series]

    def family_history(self, family: str, days: bool, limit: int) -> list[dict[str, int | None]]:
        """A product's price history: the hourly candles of every contract of a family
        (`CLASS.REGION`) merged by hour, or by China Standard Time day; oldest first, each
        with its volume-weighted average price, also per standard card-hour."""
        merged: dict[int, list[int]] = {}
        example = None
        for symbol, view in self.views.items():
            if family_of(symbol) != family:
                continue
            example = symbol
            for candle in view.candles["1h"]:
                start = _cst_day(candle.start) if days else candle.start
                low, high, volume, turnover, trades = merged.setdefault(
                    start, [candle.low, candle.high, 0, 0, 0]
                )
                merged[start] = [
                    min(low, candle.low),
                    max(high, candle.high),
                    volume + candle.volume,
                    turnover + candle.turnover,
                    trades + candle.trades,
                ]
        history: list[dict[str, int | None]] = []
        for start in sorted(merged)[-limit:]:
            low, high, volume, turnover, trades = merged[start]
            vwap = volume_weighted_price(turnover, volume)
            history.append(
                {
                    "start": start,
                    "low": low,
                    "high": high,
                    "volume": volume,
                    "turnover": turnover,
                    "trades": trades,
                    "vwap": vwap,
                    "vwap_per_std": None if example is None else self.per_std(example, vwap),
                }
            )
        return history

    def stats(self, symbol: str) -> dict[str, Any]:
        """24-hour statistics of a contract, with prices per standard card-hour."""
        stats = self.views[symbol].stats(self.now_ms)
        stats["last_per_std"] = self.per_std(symbol, stats["last"])
        stats["vwap_per_std"] = self.per_std(symbol, stats["vwap"])
        return stats

    def stats_message(self, symbol: str) -> dict[str, Any]:
        """24-hour statistics, as streamed."""
        return {"type": "stats", "symbol": symbol, **self.stats(symbol)}

    def balance_message(self, account_id: str, symbol: str | None, ts: int) -> dict[str, Any]:
        """An account's cash and, if a contract is named, its capacity and position in it."""
        cash = self.accounts.cash.get(account_id)
        message: dict[str, Any] = {
            "type": "balance",
            "account_id": account_id,
            "cash": {
                "available": 0 if cash is None else cash.available,
                "held": 0 if cash is None else cash.held,
            },
            "ts": ts,
        }
        if symbol is not None:
            capacity = self.accounts.capacity.get((account_id, symbol))
            message["symbol"] = symbol
            message["capacity"] = {
                "available": 0 if capacity is None else capacity.available,
                "held": 0 if capacity is None else capacity.held,
            }
            message["position"] = self.accounts.positions.get((account_id, symbol), 0)
        return message

    def obligation_message(self, account_id: str, symbol: str) -> dict[str, Any]:
        """What a provider has sold of a contract and must deliver, and what it is paid."""
        quantity, payout = self.obligations.get((account_id, symbol), (0, 0))
        spec = self.spec(symbol)
        return {
            "type": "obligation",
            "symbol": symbol,
            "delivery_start": None if spec is None else spec.delivery_start.isoformat(),
            "quantity": quantity,
            "payout": payout,
        }

    def account_snapshot(self, account_id: str) -> dict[str, Any]:
        """Everything the private channels show of an account, now."""
        cash = self.accounts.cash.get(account_id)
        return {
            "type": "account_snapshot",
            "account_id": account_id,
            "cash": {
                "available": 0 if cash is None else cash.available,
                "held": 0 if cash is None else cash.held,
            },
            "capacity": [
                {"symbol": s, "available": b.available, "held": b.held}
                for (a, s), b in sorted(self.accounts.capacity.items())
                if a == account_id
            ],
            "positions": [
                {"symbol": s, "quantity": q}
                for (a, s), q in sorted(self.accounts.positions.items())
                if a == account_id and q
            ],
            "open_orders": [
                o.as_message()
                for o in sorted(self.orders.values(), key=lambda o: o.ts)
                if o.account_id == account_id
            ],
            "obligations": [
                self.obligation_message(account_id, s)
                for (a, s) in sorted(self.obligations)
                if a == account_id
            ],
        }


def _outcome_key(event: AnyEvent) -> str | None:
    if isinstance(event, CancelRejected) and event.order_id == "*":
        # The risk stage's answer to a kill switch when the account has no open order.
        return cancel_all_key(event.account_id)
    if isinstance(event, BlockAccepted) and event.group is not None:
        # An alternative of an exclusive group: the group is accepted (its first alternative
        # to arrive answers the caller, who waits on the group).
        return order_key(event.account_id, event.group)
    if isinstance(
        event,
        OrderAccepted
        | OrderRejected
        | OrderCancelled
        | CancelRejected
        | OrderAmended
        | AmendRejected
        | BlockAccepted,
    ):
        return order_key(event.account_id, event.order_id)
    if isinstance(event, FundsDeposited | CapacityDeposited | DepositRejected):
        return deposit_key(event.account_id, event.deposit_id)
    if isinstance(event, CancelAllRequested):
        return cancel_all_key(event.account_id)
    return _request_outcome_key(event)


def _request_outcome_key(event: AnyEvent) -> str | None:
    """The `request_key` of the request (withdrawal, delivery, programme) an event answers."""
    if isinstance(event, RequestRejected):
        return request_key(event.request, event.account_id, event.request_id)
    if isinstance(event, FundsWithdrawn):
        return request_key("WithdrawFunds", event.account_id, event.withdrawal_id)
    if isinstance(event, CapacityWithdrawn):
        return request_key("WithdrawCapacity", event.account_id, event.withdrawal_id)
    if isinstance(event, MeteringReported):
        return request_key("ReportMetering", event.provider_id, event.report_id)
    if isinstance(event, BundleDrawn):
        return request_key("ReportMetering", event.provider_id, event.report_id)
    if isinstance(event, DeliveryDisputed):
        return request_key("DisputeDelivery", event.buyer_id, event.dispute_id)
    if isinstance(event, CapacityRecalled):
        return request_key("RecallCapacity", event.provider_id, event.recall_id)
    if isinstance(event, DeliverySettled) and event.resolved_by is not None:
        resolved = resolution_id(event.symbol, event.provider_id, event.buyer_id)
        return request_key("ResolveDispute", event.resolved_by, resolved)
    if isinstance(event, ProgrammeCreated):
        return request_key("CreateProgramme", event.admin_id, event.programme_id)
    if isinstance(event, ConcessionGranted):
        granted = f"{event.concession_id}:{event.account_id}"
        return request_key("GrantConcession", event.operator_id, granted)
    if isinstance(event, DiscountPoolFunded):
        funded = scoped(event.programme_id, event.pool_id)
        return request_key("FundDiscountPool", event.operator_id, funded)
    if isinstance(event, GrantApproved):
        application = scoped(event.programme_id, event.application_id)
        return request_key("ApproveGrant", event.admin_id, application)
    if isinstance(event, EnterpriseRegistered):
        return request_key("RegisterEnterprise", event.account_id, event.account_id)
    if isinstance(event, VoucherPolicySet):
        return request_key("SetVoucherPolicy", event.operator_id, VOUCHER_POLICY)
    return _application_outcome_key(event)


def _application_outcome_key(event: AnyEvent) -> str | None:
    """The `request_key` of the step of an application an event answers."""
    if isinstance(event, GrantApplied | ApplicationSupplemented):
        kind = "ApplyForGrant" if isinstance(event, GrantApplied) else "SupplementApplication"
        return request_key(kind, event.account_id, scoped(event.programme_id, event.application_id))
    if isinstance(event, ApplicationInfoRequested | ApplicationRejected):
        kind = (
            "RequestApplicationInfo"
            if isinstance(event, ApplicationInfoRequested)
            else "RejectApplication"
        )
        return request_key(kind, event.admin_id, scoped(event.programme_id, event.application_id))
    if isinstance(event, MarketControlRequested | MarketControlRejected):
        return control_key(event.operator_id, event.symbol, event.action)
    if isinstance(event, AccountLimitsSet):
        # Keyed as risk's refusal of it is (`RequestRejected`), so either answers the waiter.
        return request_key("SetAccountLimits", event.operator_id, event.account_id)
    return None


_CONTROL_SETTLES: dict[str, frozenset[str]] = {
    "halt": frozenset(("halted",)),
    "resume": frozenset(("continuous", "pre_open")),
    "list": frozenset(("continuous", "pre_open")),
    "delist": frozenset(("closed",)),
}
"""The contract states in which matching carries out an operator's control of one contract
that changes its state; the others (`schedule_auction`, `set_band`) are carried out when
recorded acting on their contract."""


def order_key(account_id: str, order_id: str) -> str:
    """What a caller waits on for the outcome of an account's order, cancel or amend."""
    return f"order:{scoped(account_id, order_id)}"


def deposit_key(account_id: str, deposit_id: str) -> str:
    """What a caller waits on for the outcome of an account's deposit."""
    return f"deposit:{scoped(account_id, deposit_id)}"


def request_key(request: str, requester: str, request_id: str) -> str:
    """What a caller waits on for the outcome of a request (`request` is its command type) that
    `requester` sent: an account, a programme's administrator or an operator."""
    return f"{request}:{scoped(requester, request_id)}"


def cancel_all_key(account_id: str) -> str:
    """What a kill switch's caller waits on."""
    return f"cancel-all:{account_id}"


def control_key(operator_id: str, symbol: str, action: str) -> str:
    """What an operator's market command waits on."""
    return f"control:{operator_id}:{symbol}:{action}"


def _liquidity(aggressor: str | None, side: str) -> str:
    """Taker or maker; `auction` for a trade of a call auction (no aggressor)."""
    if aggressor is None:
        return "auction"
    return "taker" if aggressor == side else "maker"
