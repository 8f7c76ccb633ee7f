"""The matching engine: the books of hourly compute contracts, their auctions and their lifecycle.

Pure and deterministic: no I/O, no clock, no randomness, integers only. Every command carries
the log time `ts` (ms) of the record that brought it; time advances only when a command arrives
(a scheduler that wants expiries or auctions to happen on time appends a clock record, see
`advance`). Timed work that falls due at or before `ts` (order expiry, reopening and scheduled
auctions, gate closure, delivery) runs before the command itself, in the order
(time, kind: expiry < reopening < auction < gate closure < delivery, then the name of the order,
contract or family).

Outputs are appended to `MatchingEngine.events`: typed tuples, whose kinds, layouts, reasons
and states `matching.outputs` defines.

Order semantics (see docs/MATCHING.md for the whole rule book):
- Price-time priority; trades at the resting (maker) order's price.
- All-or-none (AON) orders rest hidden (not in the displayed depth) and trade only in full: an
  incoming order takes a resting AON order only if it can fill all of it, otherwise it passes
  it by; an incoming AON order trades on arrival only if it can be filled in full, otherwise it
  rests (or is cancelled when IOC/FOK) without trading.
- FOK, AON and minimum-quantity orders are first matched without side effects (a dry run); if
  the dry run cannot fill what they need, nothing happens but their cancellation (or, for a
  resting AON order, its resting).
- Self-trade prevention compares ownership groups (default: the account); the incoming order's
  mode decides: cancel the resting order (default), cancel the incoming, cancel both, or
  decrement both by the smaller quantity without a trade.
- Price band: an incoming order may only trade at prices within `band` of the reference price
  (the last trade or auction price) as it was at its arrival. Reaching a price level outside
  halts the contract (the circuit breaker); a limit order's remainder rests; after `halt_ms` a
  reopening auction runs. Without a reference price (0) there is no band.
- Market orders are IOC limit orders at reference +- `protection` (and at most their own cap;
  with `protection` 0 or without a reference price, only the cap).
- Block orders: the same quantity over consecutive hours of one family, limited by an average
  price. In continuous trading they fill in every hour at once or are cancelled; in a call
  phase they wait for the family's auction, which accepts or rejects each block whole.

Call auctions (opening, scheduled, reopening) clear each contract at one price:
1. candidates are the limit prices of the orders taking part plus the reference price;
2. choose the candidate that maximises executed volume min(demand, supply); then the one with
   the smallest |demand - supply|; then the one nearest the reference price; then the lower;
3. the executed volume is allocated by price, then time priority on each side (block legs,
   which take part at any price, come first), and buy and sell allocations are paired in that
   order into trades at the clearing price;
4. an AON order that would be filled only in part, or a block that would not be filled in
   every hour or whose average clearing price breaks its limit, makes the auction recompute
   without it: the newest such order is removed first (an AON order keeps resting, a block is
   rejected whole), until no such order remains. Self-trade prevention does not apply.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left, insort
from collections.abc import Collection, Iterable, Sequence
from heapq import heappop, heappush
from typing import Any, Final

from matching.outputs import (
    ACCEPTED,
    AMEND_REJECTED,
    AMENDED,
    AUCTION,
    CANCEL_REJECTED,
    CANCELLED,
    CANCELLED_ALL,
    CLOSED,
    CONTINUOUS,
    DELIVERED,
    EXPIRED,
    HALTED,
    OPERATOR_REJECTED,
    PRE_OPEN,
    REDUCED,
    REJECTED,
    STATE,
    TRADE,
    CancelReason,
    ContractState,
    Output,
    RefusalReason,
    StateReason,
)
from matching.outputs import Side as OrderSide

BUY: Final = "buy"
SELL: Final = "sell"

GTC = "GTC"
GTD = "GTD"
DAY = "DAY"
IOC = "IOC"
FOK = "FOK"
TIME_IN_FORCE = (GTC, GTD, DAY, IOC, FOK)

CANCEL_RESTING = "cancel_resting"
CANCEL_INCOMING = "cancel_incoming"
CANCEL_BOTH = "cancel_both"
DECREMENT = "decrement"
STP_MODES = (CANCEL_RESTING, CANCEL_INCOMING, CANCEL_BOTH, DECREMENT)

# The reasons of the order paths, read as globals: an enum member's attribute read costs some
# 60 ns more, on every cancel, IOC remainder and self-trade.
_REQUESTED: Final = CancelReason.REQUESTED
_UNFILLED_IOC: Final = CancelReason.UNFILLED_IOC
_SELF_TRADE: Final = CancelReason.SELF_TRADE
_KILL_SWITCH: Final = CancelReason.KILL_SWITCH
_MARKET_PROTECTION: Final = CancelReason.MARKET_PROTECTION

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
CST_DAY_OFFSET_MS = 16 * HOUR_MS
"""A trading day ends at midnight China Standard Time, 16:00 UTC."""

INFINITY = 1 << 62
RESTING_TIF = (GTC, GTD, DAY)

# Timer kinds, in the order they run when due at the same time.
_T_EXPIRE = 0
_T_REOPEN = 1
_T_AUCTION = 2
_T_CLOSE = 3
_T_DELIVER = 4


class Order:
    """A resting order (or one being matched)."""

    __slots__ = (
        "account",
        "aon",
        "book",
        "group",
        "order_id",
        "post_only",
        "price",
        "remaining",
        "seq",
        "side",
        "stp_mode",
    )

    def __init__(
        self,
        order_id: str,
        account: str,
        side: OrderSide,
        price: int,
        remaining: int,
        group: str,
        stp_mode: str,
        seq: int,
        book: Book,
        aon: bool,
        post_only: bool,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price
        self.remaining = remaining
        self.group = group
        self.stp_mode = stp_mode
        self.seq = seq
        self.book = book
        self.aon = aon
        self.post_only = post_only


class Level:
    """The resting orders at one price, oldest first; `quantity` counts only displayed orders."""

    __slots__ = ("aon", "orders", "price", "quantity")

    def __init__(self, price: int) -> None:
        self.price = price
        self.quantity = 0
        self.aon = 0
        self.orders: dict[str, Order] = {}


class Side:
    """One side of a book; `keys` is ascending and holds price * sign, so index 0 is best."""

    __slots__ = ("before", "keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []
        self.before: dict[int, int] = {}
        """price -> displayed quantity, as it was when changes were last taken, of each level
        changed since (`take_changes`): what changed costs the levels changed, not the side."""

    def iter_levels(self) -> Iterable[Level]:
        """Levels best first."""
        sign = self.sign
        levels = self.levels
        return [levels[key * sign] for key in self.keys]

    def depth(self, limit: int | None = None) -> list[tuple[int, int]]:
        """Displayed (price, quantity) levels, best first (at most `limit`)."""
        shown = [(lv.price, lv.quantity) for lv in self.iter_levels() if lv.quantity]
        return shown if limit is None else shown[:limit]

    def take_changes(self) -> list[tuple[int, int]]:
        """(price, displayed quantity now) of every level whose displayed quantity differs
        from when changes were last taken, ascending by price (0: the level is gone or
        hidden); from now on changes count from here."""
        before = self.before
        if not before:
            return []
        levels = self.levels
        changes = []
        for price, then in before.items():
            level = levels.get(price)
            now = 0 if level is None else level.quantity
            if now != then:
                changes.append((price, now))
        before.clear()
        changes.sort()
        return changes


class Book:
    """The book, parameters and lifecycle state of one contract."""

    __slots__ = (
        "asks",
        "band",
        "bids",
        "close_at",
        "delivery_at",
        "family",
        "protection",
        "reference",
        "reopen_at",
        "state",
        "symbol",
        "tick",
        "trades",
    )

    def __init__(
        self,
        symbol: str,
        family: str,
        delivery_at: int,
        reference: int,
        tick: int,
        band: int,
        protection: int,
        close_at: int,
    ) -> None:
        self.symbol = symbol
        self.family = family
        self.delivery_at = delivery_at
        self.reference = reference
        self.tick = tick
        self.band = band
        self.protection = protection
        self.close_at = close_at
        self.state: ContractState = PRE_OPEN
        self.reopen_at = 0
        self.trades = 0
        self.bids = Side(-1)
        self.asks = Side(1)

    @property
    def orders(self) -> dict[str, Order]:
        """Resting orders of this book by id (built on each call; for audits and queries)."""
        return {o.order_id: o for side in (self.bids, self.asks) for o in _side_orders(side)}

    def best_bid(self) -> int | None:
        """Highest displayed buy price."""
        shown = self.bids.depth(1)
        return shown[0][0] if shown else None

    def best_ask(self) -> int | None:
        """Lowest displayed sell price."""
        shown = self.asks.depth(1)
        return shown[0][0] if shown else None


class Block:
    """A block order waiting for its family's auction."""

    __slots__ = ("account", "block_id", "family", "group", "price", "quantity", "seq", "side")

    def __init__(
        self,
        block_id: str,
        account: str,
        side: OrderSide,
        family: str,
        price: int,
        quantity: int,
        group: str,
        seq: int,
    ) -> None:
        self.block_id = block_id
        self.account = account
        self.side = side
        self.family = family
        self.price = price
        self.quantity = quantity
        self.group = group
        self.seq = seq


class MatchingEngine:
    """Every book of the contracts it was given, their schedules, and the events they caused."""

    def __init__(self, halt_ms: int = 60_000, day_offset_ms: int = CST_DAY_OFFSET_MS) -> None:
        self.halt_ms = halt_ms
        self.day_offset_ms = day_offset_ms
        self.books: dict[str, Book] = {}
        self.orders: dict[str, Order] = {}
        self.by_account: dict[str, dict[str, Order]] = {}
        self.blocks: dict[str, Block] = {}
        self.block_symbols: dict[str, tuple[str, ...]] = {}
        self.events: list[Output] = []
        self.now = 0
        self.seq = 0
        self._timers: list[tuple[int, int, str, int, Any]] = []
        self._timer_seq = 0
        self._deadline = INFINITY
        self._stop = ""

    def take_events(self) -> list[Output]:
        """The events produced since the last call, oldest first."""
        events = self.events
        self.events = []
        return events

    def list_contract(
        self,
        ts: int,
        symbol: str,
        family: str,
        delivery_at: int,
        reference: int,
        *,
        tick: int = 1,
        band: int = 0,
        protection: int = 0,
        open_at: int | None = None,
        close_at: int | None = None,
        continuous: bool = False,
    ) -> None:
        """List a contract in pre-open; it opens by auction at `open_at` (or when resumed).

        `continuous` lists it straight into continuous trading instead: a new book holds no
        orders, so an opening auction would have nothing to uncross.
        `band` (0: none) and `protection` are price distances from the reference price;
        `close_at` is the gate closure (default: the delivery start), when resting orders expire.
        """
        self.advance(ts)
        if symbol in self.books:
            self.events.append((OPERATOR_REJECTED, symbol, "list", RefusalReason.ALREADY_LISTED))
            return
        close = delivery_at if close_at is None else close_at
        book = Book(symbol, family, delivery_at, reference, tick, band, protection, close)
        self.books[symbol] = book
        if continuous:
            book.state = CONTINUOUS
        self.events.append((STATE, symbol, book.state, StateReason.LISTED))
        if open_at is not None and not continuous:
            self._push_timer(open_at, _T_AUCTION, family, (symbol,))
        self._push_timer(close, _T_CLOSE, symbol, symbol)
        self._push_timer(delivery_at, _T_DELIVER, symbol, symbol)
        self.advance(self.now)

    def schedule_auction(self, ts: int, family: str, at: int, symbols: Sequence[str]) -> None:
        """Run one call auction at `at` over those of `symbols` still in pre-open, with blocks."""
        self.advance(ts)
        for symbol in symbols:
            book = self.books.get(symbol)
            if book is None or book.family != family:
                self.events.append(
                    (OPERATOR_REJECTED, symbol, "schedule", RefusalReason.UNKNOWN_CONTRACT)
                )
                return
        self._push_timer(max(at, self.now), _T_AUCTION, family, tuple(symbols))
        self.advance(self.now)

    def due(self, ts: int) -> bool:
        """Whether anything falls due by log time `ts` (`advance` would do more than move
        the clock)."""
        return ts >= self._deadline

    def advance(self, ts: int) -> None:
        """Move the log time to `ts` (never back), running whatever falls due."""
        if ts >= self._deadline:
            self._run_timers(ts)
        if ts > self.now:
            self.now = ts

    def _push_timer(self, at: int, kind: int, key: str, payload: Any) -> None:
        self._timer_seq += 1
        heappush(self._timers, (at, kind, key, self._timer_seq, payload))
        if at < self._deadline:
            self._deadline = at

    def _run_timers(self, ts: int) -> None:
        timers = self._timers
        while timers and timers[0][0] <= ts:
            at, kind, _, _, payload = heappop(timers)
            if at > self.now:
                self.now = at
            if kind == _T_EXPIRE:
                order: Order = payload[0]
                if self.orders.get(order.order_id) is order:
                    self._remove(order)
                    self.events.append(
                        (
                            EXPIRED,
                            order.book.symbol,
                            order.order_id,
                            order.account,
                            order.side,
                            order.remaining,
                            payload[1],
                        )
                    )
            elif kind == _T_REOPEN:
                # A delisted book is delivered: its reopening and auctions no longer apply.
                halted = self.books.get(payload)
                if halted is not None and halted.state == HALTED and halted.reopen_at == at:
                    self._auction([halted])
            elif kind == _T_AUCTION:
                books = [self.books.get(s) for s in payload]
                self._auction([b for b in books if b is not None and b.state == PRE_OPEN])
            elif kind == _T_CLOSE:
                self._close(self.books[payload])
            else:
                book = self.books[payload]
                if book.state == CLOSED:
                    book.state = DELIVERED
                    self.events.append((STATE, book.symbol, DELIVERED, StateReason.DELIVERY))
        self._deadline = timers[0][0] if timers else INFINITY

    # Orders.

    def submit(
        self,
        ts: int,
        symbol: str,
        order_id: str,
        account: str,
        side: OrderSide,
        price: int,
        quantity: int,
        tif: str = GTC,
        expire_at: int = 0,
        min_quantity: int = 0,
        all_or_none: bool = False,
        post_only: bool = False,
        stp_group: str = "",
        stp_mode: str = CANCEL_RESTING,
        market: bool = False,
    ) -> None:
        """Enter an order. A market order's `price` is its own cap (0: none)."""
        if ts >= self._deadline:
            self._run_timers(ts)
        if ts > self.now:
            self.now = ts
        book = self.books.get(symbol)
        if book is None:
            self.events.append((REJECTED, symbol, order_id, CancelReason.CONTRACT_NOT_TRADING))
            return
        if (
            order_id in self.orders
            or quantity <= 0
            or price <= 0
            or price % book.tick
            or stp_mode not in STP_MODES
            or (self.blocks and order_id in self.blocks)
        ):
            reason = self._invalid(book, order_id, price, quantity, stp_mode, market)
            if reason is not None:
                self.events.append((REJECTED, symbol, order_id, reason))
                return
        if (
            (tif != GTC and tif != IOC)
            or min_quantity
            or all_or_none
            or post_only
            or market
            or book.state != CONTINUOUS
        ):
            self._submit_special(
                book,
                order_id,
                account,
                side,
                price,
                quantity,
                tif,
                expire_at,
                min_quantity,
                all_or_none,
                post_only,
                stp_group or account,
                stp_mode,
                market,
            )
            return
        # The hot path: a plain limit (or IOC) order in continuous trading.
        self.events.append((ACCEPTED, symbol, order_id))
        if side == BUY:
            opposite = book.asks
            own = book.bids
            limit = price
        else:
            opposite = book.bids
            own = book.asks
            limit = -price
        keys = opposite.keys
        group = stp_group or account
        if keys and keys[0] <= limit:
            band = book.band
            quantity = self._match(
                book,
                opposite,
                limit,
                opposite.sign * book.reference + band if band and book.reference else INFINITY,
                quantity,
                order_id,
                account,
                side,
                group,
                stp_mode,
            )
            if not quantity or self._stop == _SELF_TRADE:
                return
        if tif == IOC:
            self.events.append(
                (CANCELLED, symbol, order_id, account, side, quantity, _UNFILLED_IOC)
            )
            return
        self.seq = seq = self.seq + 1
        order = Order(
            order_id, account, side, price, quantity, group, stp_mode, seq, book, False, False
        )
        level = own.levels.get(price)
        if level is None:
            level = own.levels[price] = Level(price)
            insort(own.keys, -limit)
        level.orders[order_id] = order
        own.before.setdefault(price, level.quantity)
        level.quantity += quantity
        self.orders[order_id] = order
        mine = self.by_account.get(account)
        if mine is None:
            mine = self.by_account[account] = {}
        mine[order_id] = order

    def _invalid(
        self,
        book: Book,
        order_id: str,
        price: int,
        quantity: int,
        stp_mode: str,
        market: bool,
    ) -> CancelReason | None:
        """Why an order must be rejected before anything else is looked at (None if it need
        not)."""
        if order_id in self.orders or order_id in self.blocks:
            return CancelReason.DUPLICATE_ORDER_ID
        if quantity <= 0:
            return CancelReason.INVALID_QUANTITY
        if price < 0 or (price == 0 and not market):
            return CancelReason.INVALID_PRICE
        if price % book.tick:
            return CancelReason.PRICE_NOT_ON_TICK
        if stp_mode not in STP_MODES:
            return CancelReason.INVALID_ORDER
        return None

    def _submit_special(
        self,
        book: Book,
        order_id: str,
        account: str,
        side: OrderSide,
        price: int,
        quantity: int,
        tif: str,
        expire_at: int,
        min_quantity: int,
        aon: bool,
        post_only: bool,
        group: str,
        stp_mode: str,
        market: bool,
    ) -> None:
        events = self.events
        symbol = book.symbol
        invalid = (
            tif not in TIME_IN_FORCE
            or stp_mode not in STP_MODES
            or min_quantity < 0
            or min_quantity > quantity
            or (post_only and (market or tif in (IOC, FOK) or aon or min_quantity))
            or (market and tif not in (GTC, IOC))
        )
        if invalid:
            events.append((REJECTED, symbol, order_id, CancelReason.INVALID_ORDER))
            return
        if tif == GTD and expire_at <= self.now:
            events.append((REJECTED, symbol, order_id, CancelReason.INVALID_EXPIRY))
            return
        state = book.state
        if state in (CLOSED, DELIVERED):
            events.append((REJECTED, symbol, order_id, CancelReason.CONTRACT_CLOSED))
            return
        immediate = market or tif in (IOC, FOK)
        if state != CONTINUOUS and (immediate or min_quantity):
            events.append((REJECTED, symbol, order_id, CancelReason.NOT_CONTINUOUS))
            return
        opposite = book.asks if side == BUY else book.bids
        sign = opposite.sign
        if market and book.reference and book.protection:
            limit = sign * book.reference + book.protection
            if price:
                limit = min(limit, sign * price)
        elif market:
            # No protection band, or no reference price yet: only the order's own cap.
            limit = sign * price if price else INFINITY
        else:
            limit = sign * price
        keys = opposite.keys
        crosses = bool(keys) and keys[0] <= limit
        if (
            post_only
            and crosses
            and state == CONTINUOUS
            and self._would_take(opposite, limit, quantity)
        ):
            events.append((REJECTED, symbol, order_id, CancelReason.POST_ONLY_WOULD_TAKE))
            return
        expiry = 0
        if tif == GTD:
            expiry = expire_at
        elif tif == DAY:
            offset = self.day_offset_ms
            expiry = ((self.now - offset) // DAY_MS + 1) * DAY_MS + offset
        events.append((ACCEPTED, symbol, order_id))
        if state != CONTINUOUS:
            order = self._rest(
                book, order_id, account, side, price, quantity, group, stp_mode, aon, post_only
            )
            if expiry:
                self._push_expiry(order, expiry, tif)
            return
        band_key = sign * book.reference + book.band if book.band and book.reference else INFINITY
        need = quantity if (aon or tif == FOK) else min_quantity
        trade = True
        if need:
            fillable = (
                self._fillable(book, opposite, limit, band_key, quantity, group, stp_mode)
                if crosses
                else 0
            )
            if fillable < need:
                unfilled: CancelReason | None = None
                if tif == FOK:
                    unfilled = CancelReason.FOK_NOT_FILLED
                elif aon and tif == IOC:
                    unfilled = CancelReason.AON_NOT_FILLED
                elif not aon:
                    unfilled = CancelReason.MIN_QUANTITY_NOT_MET
                if unfilled is not None:
                    events.append((CANCELLED, symbol, order_id, account, side, quantity, unfilled))
                    return
                trade = False
        remaining = quantity
        self._stop = ""
        if trade and crosses:
            remaining = self._match(
                book, opposite, limit, band_key, quantity, order_id, account, side, group, stp_mode
            )
        if not remaining or self._stop == _SELF_TRADE:
            return
        if immediate:
            reason = _MARKET_PROTECTION if market else _UNFILLED_IOC
            events.append((CANCELLED, symbol, order_id, account, side, remaining, reason))
            return
        order = self._rest(
            book, order_id, account, side, price, remaining, group, stp_mode, aon, post_only
        )
        if expiry:
            self._push_expiry(order, expiry, tif)

    def _push_expiry(self, order: Order, at: int, tif: str) -> None:
        reason = CancelReason.GOOD_TILL_DATE if tif == GTD else CancelReason.END_OF_DAY
        self._push_timer(at, _T_EXPIRE, order.order_id, (order, reason))

    def _rest(
        self,
        book: Book,
        order_id: str,
        account: str,
        side: OrderSide,
        price: int,
        quantity: int,
        group: str,
        stp_mode: str,
        aon: bool = False,
        post_only: bool = False,
    ) -> Order:
        self.seq += 1
        order = Order(
            order_id,
            account,
            side,
            price,
            quantity,
            group,
            stp_mode,
            self.seq,
            book,
            aon,
            post_only,
        )
        book_side = book.bids if side == BUY else book.asks
        level = book_side.levels.get(price)
        if level is None:
            level = book_side.levels[price] = Level(price)
            insort(book_side.keys, book_side.sign * price)
        level.orders[order_id] = order
        if aon:
            level.aon += 1
        else:
            book_side.before.setdefault(price, level.quantity)
            level.quantity += quantity
        self.orders[order_id] = order
        mine = self.by_account.get(account)
        if mine is None:
            mine = self.by_account[account] = {}
        mine[order_id] = order
        return order

    def _remove(self, order: Order) -> None:
        """Take an order out of its book and the indexes (no event)."""
        book = order.book
        book_side = book.bids if order.side == BUY else book.asks
        price = order.price
        level = book_side.levels[price]
        del level.orders[order.order_id]
        if order.aon:
            level.aon -= 1
        else:
            book_side.before.setdefault(price, level.quantity)
            level.quantity -= order.remaining
        if not level.orders:
            del book_side.levels[price]
            keys = book_side.keys
            del keys[bisect_left(keys, book_side.sign * price)]
        del self.orders[order.order_id]
        # An account's index stays when it empties: most accounts come back.
        del self.by_account[order.account][order.order_id]

    def _match(
        self,
        book: Book,
        opposite: Side,
        limit: int,
        band_key: int,
        remaining: int,
        order_id: str,
        account: str,
        side: OrderSide,
        group: str,
        stp_mode: str,
    ) -> int:
        """Trade an incoming order against `opposite`; returns what is left of it.

        Sets `_stop` to SELF_TRADE when self-trade prevention cancelled the incoming order and
        to PRICE_BAND when the book halted.
        """
        self._stop = ""
        keys = opposite.keys
        levels = opposite.levels
        before = opposite.before
        sign = opposite.sign
        low_key = band_key - 2 * book.band if band_key < INFINITY else -INFINITY
        orders = self.orders
        by_account = self.by_account
        events = self.events
        symbol = book.symbol
        trades = book.trades
        index = 0
        last_price = 0
        while remaining and index < len(keys):
            key = keys[index]
            if key > limit:
                break
            if key > band_key or key < low_key:
                self._halt(book, StateReason.PRICE_BAND)
                self._stop = StateReason.PRICE_BAND
                break
            price = key * sign
            level = levels[price]
            # Trades and self-trade prevention take from this level from here on.
            before.setdefault(price, level.quantity)
            resting = level.orders
            if not level.aon:
                # The common case: take makers from the front until the order is done.
                filled = 0
                while remaining and resting:
                    maker = next(iter(resting.values()))
                    if maker.group == group:
                        remaining = self._prevent_self_trade(
                            book, level, maker, remaining, order_id, account, side, stp_mode
                        )
                        if self._stop:
                            break
                        continue
                    maker_left = maker.remaining
                    trades += 1
                    if remaining < maker_left:
                        events.append(
                            (
                                TRADE,
                                symbol,
                                trades,
                                price,
                                remaining,
                                order_id,
                                maker.order_id,
                                account,
                                maker.account,
                                side,
                            )
                        )
                        maker.remaining = maker_left - remaining
                        filled += remaining
                        remaining = 0
                        break
                    events.append(
                        (
                            TRADE,
                            symbol,
                            trades,
                            price,
                            maker_left,
                            order_id,
                            maker.order_id,
                            account,
                            maker.account,
                            side,
                        )
                    )
                    filled += maker_left
                    remaining -= maker_left
                    maker_id = maker.order_id
                    del resting[maker_id]
                    del orders[maker_id]
                    del by_account[maker.account][maker_id]
                if filled:
                    level.quantity -= filled
                    last_price = price
            else:
                # All-or-none makers that this order cannot fill completely are passed by.
                for maker in list(resting.values()):
                    if not remaining:
                        break
                    maker_left = maker.remaining
                    if maker.aon and maker_left > remaining:
                        continue
                    if maker.group == group:
                        remaining = self._prevent_self_trade(
                            book, level, maker, remaining, order_id, account, side, stp_mode
                        )
                        if self._stop:
                            break
                        continue
                    traded = remaining if remaining < maker_left else maker_left
                    trades += 1
                    events.append(
                        (
                            TRADE,
                            symbol,
                            trades,
                            price,
                            traded,
                            order_id,
                            maker.order_id,
                            account,
                            maker.account,
                            side,
                        )
                    )
                    remaining -= traded
                    last_price = price
                    if maker.aon:
                        level.aon -= 1
                    else:
                        level.quantity -= traded
                    if traded == maker_left:
                        maker_id = maker.order_id
                        del resting[maker_id]
                        del orders[maker_id]
                        del by_account[maker.account][maker_id]
                    else:
                        maker.remaining = maker_left - traded
            if not resting:
                del levels[price]
                del keys[index]
            else:
                index += 1
            if self._stop:
                break
        book.trades = trades
        if last_price:
            book.reference = last_price
        return remaining

    def _prevent_self_trade(
        self,
        book: Book,
        level: Level,
        maker: Order,
        remaining: int,
        order_id: str,
        account: str,
        side: OrderSide,
        stp_mode: str,
    ) -> int:
        events = self.events
        symbol = book.symbol
        if stp_mode == DECREMENT:
            cut = min(remaining, maker.remaining)
            if cut == maker.remaining:
                self._drop_maker(level, maker)
                events.append(
                    (CANCELLED, symbol, maker.order_id, maker.account, maker.side, cut, _SELF_TRADE)
                )
            else:
                maker.remaining -= cut
                if not maker.aon:
                    level.quantity -= cut
                events.append(
                    (
                        REDUCED,
                        symbol,
                        maker.order_id,
                        maker.account,
                        maker.side,
                        cut,
                        maker.remaining,
                        _SELF_TRADE,
                    )
                )
            remaining -= cut
            if remaining:
                events.append(
                    (REDUCED, symbol, order_id, account, side, cut, remaining, _SELF_TRADE)
                )
            else:
                events.append((CANCELLED, symbol, order_id, account, side, cut, _SELF_TRADE))
                self._stop = _SELF_TRADE
            return remaining
        if stp_mode != CANCEL_INCOMING:
            self._drop_maker(level, maker)
            events.append(
                (
                    CANCELLED,
                    symbol,
                    maker.order_id,
                    maker.account,
                    maker.side,
                    maker.remaining,
                    _SELF_TRADE,
                )
            )
        if stp_mode != CANCEL_RESTING:
            events.append((CANCELLED, symbol, order_id, account, side, remaining, _SELF_TRADE))
            self._stop = _SELF_TRADE
        return remaining

    def _drop_maker(self, level: Level, maker: Order) -> None:
        """Remove a maker from its level and the indexes, leaving an empty level in place."""
        del level.orders[maker.order_id]
        if maker.aon:
            level.aon -= 1
        else:
            level.quantity -= maker.remaining
        del self.orders[maker.order_id]
        del self.by_account[maker.account][maker.order_id]

    def _fillable(
        self,
        book: Book,
        opposite: Side,
        limit: int,
        band_key: int,
        quantity: int,
        group: str,
        stp_mode: str,
        costs: list[int] | None = None,
    ) -> int:
        """How much of `quantity` would trade now (a dry run of `_match` inside the band).

        A maker of the same group is passed by when the mode cancels resting orders, and ends
        the dry run otherwise. The cost of what would trade is added to `costs[0]`.
        """
        remaining = quantity
        sign = opposite.sign
        low_key = band_key - 2 * book.band if band_key < INFINITY else -INFINITY
        cost = 0
        for key in opposite.keys:
            if key > limit or key > band_key or key < low_key or not remaining:
                break
            price = key * sign
            for maker in opposite.levels[price].orders.values():
                if maker.aon and maker.remaining > remaining:
                    continue
                if maker.group == group:
                    if stp_mode == CANCEL_RESTING:
                        continue
                    remaining = -remaining
                    break
                traded = min(remaining, maker.remaining)
                remaining -= traded
                cost += traded * price
                if not remaining:
                    break
            if remaining < 0:
                remaining = -remaining
                break
        if costs is not None:
            costs[0] += cost
        return quantity - remaining

    def _would_take(self, opposite: Side, limit: int, quantity: int) -> bool:
        sign = opposite.sign
        for key in opposite.keys:
            if key > limit:
                return False
            level = opposite.levels[key * sign]
            if level.aon < len(level.orders):
                return True
            if any(o.remaining <= quantity for o in level.orders.values()):
                return True
        return False

    def cancel(self, ts: int, order_id: str, account: str | None = None) -> None:
        """Cancel what remains of an order (or a waiting block)."""
        if ts >= self._deadline:
            self._run_timers(ts)
        if ts > self.now:
            self.now = ts
        order = self.orders.get(order_id)
        if order is None:
            block = self.blocks.get(order_id)
            if block is None:
                self.events.append((CANCEL_REJECTED, "", order_id, RefusalReason.UNKNOWN_ORDER))
            elif account is not None and block.account != account:
                self.events.append(
                    (CANCEL_REJECTED, block.family, order_id, RefusalReason.NOT_ORDER_OWNER)
                )
            else:
                self._drop_block(block, _REQUESTED)
            return
        if account is not None and order.account != account:
            self.events.append(
                (CANCEL_REJECTED, order.book.symbol, order_id, RefusalReason.NOT_ORDER_OWNER)
            )
            return
        self._remove(order)
        self.events.append(
            (
                CANCELLED,
                order.book.symbol,
                order_id,
                order.account,
                order.side,
                order.remaining,
                _REQUESTED,
            )
        )

    def cancel_all(self, ts: int, account: str, families: Collection[str] | None = None) -> None:
        """Cancel every open order and waiting block of an account (the kill switch), or only
        those of `families` (the part of the kill switch one partition acts on)."""
        self.advance(ts)
        mine = sorted(
            (
                o
                for o in self.by_account.get(account, {}).values()
                if families is None or o.book.family in families
            ),
            key=_by_seq,
        )
        blocks = sorted(
            (
                b
                for b in self.blocks.values()
                if b.account == account and (families is None or b.family in families)
            ),
            key=_by_seq,
        )
        for order in mine:
            self._remove(order)
            self.events.append(
                (
                    CANCELLED,
                    order.book.symbol,
                    order.order_id,
                    order.account,
                    order.side,
                    order.remaining,
                    _KILL_SWITCH,
                )
            )
        for block in blocks:
            self._drop_block(block, _KILL_SWITCH)
        self.events.append((CANCELLED_ALL, account, len(mine) + len(blocks)))

    def amend(
        self, ts: int, order_id: str, account: str | None, price: int = 0, quantity: int = 0
    ) -> None:
        """Change an order's price and/or open quantity (0: unchanged).

        Reducing the quantity at the same price keeps time priority; anything else re-enters
        the order as if it had just arrived (it may trade).
        """
        self.advance(ts)
        events = self.events
        order = self.orders.get(order_id)
        if order is None:
            unknown = (
                RefusalReason.NOT_AMENDABLE
                if order_id in self.blocks
                else RefusalReason.UNKNOWN_ORDER
            )
            events.append((AMEND_REJECTED, "", order_id, unknown))
            return
        book = order.book
        symbol = book.symbol
        if account is not None and order.account != account:
            events.append((AMEND_REJECTED, symbol, order_id, RefusalReason.NOT_ORDER_OWNER))
            return
        new_price = price or order.price
        new_quantity = quantity or order.remaining
        if price < 0 or quantity < 0 or new_price % book.tick:
            invalid = (
                RefusalReason.INVALID_QUANTITY if quantity < 0 else RefusalReason.INVALID_PRICE
            )
            events.append((AMEND_REJECTED, symbol, order_id, invalid))
            return
        if new_price == order.price and new_quantity <= order.remaining:
            if not order.aon:
                book_side = book.bids if order.side == BUY else book.asks
                resting = book_side.levels[order.price]
                book_side.before.setdefault(order.price, resting.quantity)
                resting.quantity -= order.remaining - new_quantity
            order.remaining = new_quantity
            events.append(
                (
                    AMENDED,
                    symbol,
                    order_id,
                    order.account,
                    order.side,
                    new_price,
                    new_quantity,
                    True,
                )
            )
            return
        opposite = book.asks if order.side == BUY else book.bids
        limit = opposite.sign * new_price
        continuous = book.state == CONTINUOUS
        if continuous and order.post_only and self._would_take(opposite, limit, new_quantity):
            events.append((AMEND_REJECTED, symbol, order_id, RefusalReason.POST_ONLY_WOULD_TAKE))
            return
        self._remove(order)
        events.append(
            (AMENDED, symbol, order_id, order.account, order.side, new_price, new_quantity, False)
        )
        remaining = new_quantity
        if continuous and opposite.keys and opposite.keys[0] <= limit:
            band_key = (
                opposite.sign * book.reference + book.band
                if book.band and book.reference
                else INFINITY
            )
            trade = True
            if order.aon:
                fillable = self._fillable(
                    book, opposite, limit, band_key, new_quantity, order.group, order.stp_mode
                )
                trade = fillable >= new_quantity
            if trade:
                remaining = self._match(
                    book,
                    opposite,
                    limit,
                    band_key,
                    new_quantity,
                    order_id,
                    order.account,
                    order.side,
                    order.group,
                    order.stp_mode,
                )
                if self._stop == _SELF_TRADE:
                    return
        if not remaining:
            return
        # Re-enter the same object, so a pending expiry still finds it.
        self.seq += 1
        order.seq = self.seq
        order.price = new_price
        order.remaining = remaining
        book_side = book.bids if order.side == BUY else book.asks
        level = book_side.levels.get(new_price)
        if level is None:
            level = book_side.levels[new_price] = Level(new_price)
            insort(book_side.keys, book_side.sign * new_price)
        level.orders[order_id] = order
        if order.aon:
            level.aon += 1
        else:
            book_side.before.setdefault(new_price, level.quantity)
            level.quantity += remaining
        self.orders[order_id] = order
        mine = self.by_account.get(order.account)
        if mine is None:
            mine = self.by_account[order.account] = {}
        mine[order_id] = order

    # Block orders.

    def submit_block(
        self,
        ts: int,
        block_id: str,
        account: str,
        side: OrderSide,
        symbols: Sequence[str],
        price: int,
        quantity: int,
        stp_group: str = "",
        stp_mode: str = CANCEL_RESTING,
    ) -> None:
        """Enter a block: `quantity` in every hour of `symbols`, at most (buy) or at least (sell)
        `price` on average, filled in all hours or none."""
        self.advance(ts)
        events = self.events
        books = [self.books.get(s) for s in symbols]
        family = books[0].family if symbols and books[0] is not None else ""
        if not symbols or any(b is None for b in books):
            events.append((REJECTED, family, block_id, CancelReason.CONTRACT_NOT_TRADING))
            return
        hours = [b for b in books if b is not None]
        if block_id in self.orders or block_id in self.blocks:
            events.append((REJECTED, family, block_id, CancelReason.DUPLICATE_ORDER_ID))
            return
        if quantity <= 0:
            events.append((REJECTED, family, block_id, CancelReason.INVALID_QUANTITY))
            return
        if price <= 0:
            events.append((REJECTED, family, block_id, CancelReason.INVALID_PRICE))
            return
        consecutive = all(
            b.family == family and b.delivery_at == hours[0].delivery_at + i * HOUR_MS
            for i, b in enumerate(hours)
        )
        if not consecutive or stp_mode not in STP_MODES:
            events.append((REJECTED, family, block_id, CancelReason.INVALID_BLOCK))
            return
        states = {b.state for b in hours}
        if states & {CLOSED, DELIVERED}:
            events.append((REJECTED, family, block_id, CancelReason.CONTRACT_CLOSED))
            return
        if len(states) > 1 or HALTED in states:
            events.append((REJECTED, family, block_id, CancelReason.NOT_CONTINUOUS))
            return
        group = stp_group or account
        events.append((ACCEPTED, family, block_id))
        if PRE_OPEN in states:
            self.seq += 1
            block = Block(block_id, account, side, family, price, quantity, group, self.seq)
            self.blocks[block_id] = block
            self.block_symbols[block_id] = tuple(symbols)
            return
        costs = [0]
        for book in hours:
            opposite = book.asks if side == BUY else book.bids
            band_key = (
                opposite.sign * book.reference + book.band
                if book.band and book.reference
                else INFINITY
            )
            if self._fillable(
                book, opposite, INFINITY, band_key, quantity, group, stp_mode, costs
            ) < (quantity):
                total = quantity * len(hours)
                events.append(
                    (
                        CANCELLED,
                        family,
                        block_id,
                        account,
                        side,
                        total,
                        CancelReason.BLOCK_NOT_FILLED,
                    )
                )
                return
        limit_cost = price * quantity * len(hours)
        if costs[0] > limit_cost if side == BUY else costs[0] < limit_cost:
            total = quantity * len(hours)
            events.append(
                (CANCELLED, family, block_id, account, side, total, CancelReason.BLOCK_PRICE)
            )
            return
        for book in hours:
            opposite = book.asks if side == BUY else book.bids
            band_key = (
                opposite.sign * book.reference + book.band
                if book.band and book.reference
                else INFINITY
            )
            self._match(
                book,
                opposite,
                band_key,
                band_key,
                quantity,
                block_id,
                account,
                side,
                group,
                stp_mode,
            )

    def _drop_block(self, block: Block, reason: CancelReason, expired: bool = False) -> None:
        """Take a waiting block away, reported as cancelled (or expired)."""
        del self.blocks[block.block_id]
        symbols = self.block_symbols.pop(block.block_id)
        total = block.quantity * len(symbols)
        family, block_id, account, side = block.family, block.block_id, block.account, block.side
        if expired:
            self.events.append((EXPIRED, family, block_id, account, side, total, reason))
        else:
            self.events.append((CANCELLED, family, block_id, account, side, total, reason))

    # Operators and lifecycle.

    def delist(self, symbol: str) -> None:
        """Forget the book of a delivered contract: nothing can happen to it any more, and a
        market that lists new hours every day must not keep every past one in memory."""
        book = self.books.get(symbol)
        if book is not None and book.state == DELIVERED:
            del self.books[symbol]

    def halt(self, ts: int, symbol: str) -> None:
        """Halt continuous trading of a contract until an operator resumes it."""
        self.advance(ts)
        book = self.books.get(symbol)
        if book is None:
            self.events.append((OPERATOR_REJECTED, symbol, "halt", RefusalReason.UNKNOWN_CONTRACT))
        elif book.state != CONTINUOUS:
            self.events.append((OPERATOR_REJECTED, symbol, "halt", RefusalReason.NOT_CONTINUOUS))
        else:
            self._halt(book, StateReason.OPERATOR)

    def resume(self, ts: int, symbol: str) -> None:
        """Reopen a halted contract (or open a pre-open one) through a call auction now."""
        self.advance(ts)
        book = self.books.get(symbol)
        if book is None:
            self.events.append(
                (OPERATOR_REJECTED, symbol, "resume", RefusalReason.UNKNOWN_CONTRACT)
            )
        elif book.state in (HALTED, PRE_OPEN):
            self._auction([book])
        else:
            self.events.append((OPERATOR_REJECTED, symbol, "resume", RefusalReason.NOT_HALTED))

    def _halt(self, book: Book, reason: StateReason) -> None:
        book.state = HALTED
        self.events.append((STATE, book.symbol, HALTED, reason))
        if reason is StateReason.PRICE_BAND:
            book.reopen_at = self.now + self.halt_ms
            self._push_timer(book.reopen_at, _T_REOPEN, book.symbol, book.symbol)
        else:
            book.reopen_at = 0

    def close_early(self, ts: int, symbol: str) -> bool:
        """Delist a contract before its gate closure: its resting orders and waiting blocks
        are cancelled as `delisted` and it takes no more. True if it was closed."""
        self.advance(ts)
        book = self.books.get(symbol)
        if book is None:
            self.events.append(
                (OPERATOR_REJECTED, symbol, "delist", RefusalReason.UNKNOWN_CONTRACT)
            )
            return False
        if book.state == CLOSED or book.state == DELIVERED:
            self.events.append((OPERATOR_REJECTED, symbol, "delist", RefusalReason.CONTRACT_CLOSED))
            return False
        self._close(book, delisted=True)
        return True

    def is_delisted(self, symbol: str) -> bool:
        """Whether the contract was closed before its gate closure, by `close_early`."""
        book = self.books.get(symbol)
        return book is not None and book.state == CLOSED and self.now < book.close_at

    def relist(self, ts: int, symbol: str, continuous: bool) -> bool:
        """Re-open a delisted contract whose gate has not closed, in continuous trading or in
        pre-open (waiting for an auction). True if it re-opened."""
        self.advance(ts)
        book = self.books.get(symbol)
        if book is None:
            self.events.append((OPERATOR_REJECTED, symbol, "list", RefusalReason.UNKNOWN_CONTRACT))
            return False
        if not self.is_delisted(symbol):
            reason = (
                RefusalReason.CONTRACT_CLOSED
                if book.state in (CLOSED, DELIVERED)
                else RefusalReason.ALREADY_LISTED
            )
            self.events.append((OPERATOR_REJECTED, symbol, "list", reason))
            return False
        book.state = CONTINUOUS if continuous else PRE_OPEN
        self.events.append((STATE, symbol, book.state, StateReason.RELISTED))
        return True

    def refuse_listing(self, symbol: str, reason: RefusalReason) -> None:
        """Report an operator's listing of a contract refused for a reason the caller sees and
        the engine cannot (a symbol outside the grammar, a contract already retired)."""
        self.events.append((OPERATOR_REJECTED, symbol, "list", reason))

    def set_band(self, ts: int, target: str, band: int) -> bool:
        """Set the price band (0: none) of a contract, or of every listed contract of a family;
        refused (`unknown_contract`) when no book has that symbol or family. True if set."""
        self.advance(ts)
        books = [b for s, b in self.books.items() if target in (s, b.family)]
        if not books:
            self.events.append(
                (OPERATOR_REJECTED, target, "set_band", RefusalReason.UNKNOWN_CONTRACT)
            )
            return False
        for book in books:
            book.band = band
        return True

    def _close(self, book: Book, delisted: bool = False) -> None:
        """Expire a contract's resting orders and waiting blocks and close it: at its gate
        closure, or delisted by an operator before it."""
        if book.state == CLOSED or book.state == DELIVERED:
            return
        if delisted:
            expiry, why = CancelReason.DELISTED, StateReason.DELISTED
        else:
            expiry, why = CancelReason.GATE_CLOSURE, StateReason.GATE_CLOSURE
        resting = [o for side in (book.bids, book.asks) for o in _side_orders(side)]
        resting.sort(key=_by_seq)
        for order in resting:
            self._remove(order)
            self.events.append(
                (
                    EXPIRED,
                    book.symbol,
                    order.order_id,
                    order.account,
                    order.side,
                    order.remaining,
                    expiry,
                )
            )
        waiting = [
            self.blocks[b] for b, symbols in self.block_symbols.items() if book.symbol in symbols
        ]
        for block in sorted(waiting, key=_by_seq):
            self._drop_block(block, expiry, expired=True)
        book.state = CLOSED
        self.events.append((STATE, book.symbol, CLOSED, why))

    def _auction(self, books: list[Book]) -> None:
        """Uncross `books` together at one price each, with the blocks that fit in them."""
        if not books:
            return
        books = sorted(books, key=_by_delivery)
        in_auction = {b.symbol for b in books}
        blocks = [
            self.blocks[block_id]
            for block_id, symbols in self.block_symbols.items()
            if set(symbols) <= in_auction
        ]
        blocks.sort(key=_by_seq)
        excluded: set[int] = set()
        while True:
            results = {b.symbol: self._clear(b, blocks, excluded) for b in books}
            violators: list[int] = []
            for block in blocks:
                if block.seq in excluded:
                    continue
                legs = [results[s] for s in self.block_symbols[block.block_id]]
                if any(r.allocated.get(block.seq, 0) < block.quantity for r in legs):
                    violators.append(block.seq)
                    continue
                paid = sum(r.price for r in legs)
                limit = block.price * len(legs)
                if paid > limit if block.side == BUY else paid < limit:
                    violators.append(block.seq)
            for result in results.values():
                violators.extend(result.partial_aon)
            if not violators:
                break
            excluded.add(max(violators))
        for block in blocks:
            if block.seq in excluded:
                self._drop_block(block, CancelReason.BLOCK_NOT_ACCEPTED)
            else:
                del self.blocks[block.block_id]
                del self.block_symbols[block.block_id]
        for book in books:
            self._execute(book, results[book.symbol])
            reason = StateReason.OPENED if book.state == PRE_OPEN else StateReason.REOPENED
            book.state = CONTINUOUS
            book.reopen_at = 0
            self.events.append((STATE, book.symbol, CONTINUOUS, reason))

    def _clear(self, book: Book, blocks: list[Block], excluded: set[int]) -> Clearing:
        """The clearing price, volume and allocations of one contract (no side effects)."""
        bids = [o for o in _side_orders(book.bids) if o.seq not in excluded]
        asks = [o for o in _side_orders(book.asks) if o.seq not in excluded]
        legs = [
            b
            for b in blocks
            if b.seq not in excluded and book.symbol in self.block_symbols[b.block_id]
        ]
        buy_legs = [b for b in legs if b.side == BUY]
        sell_legs = [b for b in legs if b.side == SELL]
        demand_at: dict[int, int] = {}
        for o in bids:
            demand_at[o.price] = demand_at.get(o.price, 0) + o.remaining
        supply_at: dict[int, int] = {}
        for o in asks:
            supply_at[o.price] = supply_at.get(o.price, 0) + o.remaining
        reference = book.reference
        candidates = sorted({*demand_at, *supply_at, reference})
        supply = sum(b.quantity for b in sell_legs)
        supplies = []
        for price in candidates:
            supply += supply_at.get(price, 0)
            supplies.append(supply)
        demand = sum(b.quantity for b in buy_legs)
        best: tuple[int, int, int, int] | None = None
        clearing = Clearing()
        for index in range(len(candidates) - 1, -1, -1):
            price = candidates[index]
            demand += demand_at.get(price, 0)
            supply = supplies[index]
            volume = min(demand, supply)
            rank = (-volume, abs(demand - supply), abs(price - reference), price)
            if best is None or rank < best:
                best = rank
                clearing.price = price
                clearing.volume = volume
                clearing.imbalance = demand - supply
        if not clearing.volume:
            clearing.price = 0
            clearing.imbalance = 0
            return clearing
        price = clearing.price
        for participants, fills, eligible in (
            (buy_legs, clearing.buys, [o for o in bids if o.price >= price]),
            (sell_legs, clearing.sells, [o for o in asks if o.price <= price]),
        ):
            left = clearing.volume
            for block in participants:
                take = min(left, block.quantity)
                left -= take
                fills.append((block, take))
                clearing.allocated[block.seq] = take
            for order in eligible:
                take = min(left, order.remaining)
                left -= take
                fills.append((order, take))
                clearing.allocated[order.seq] = take
                if order.aon and 0 < take < order.remaining:
                    clearing.partial_aon.append(order.seq)
        return clearing

    def _execute(self, book: Book, clearing: Clearing) -> None:
        """Emit an auction's result and trades and apply its fills to the book."""
        events = self.events
        symbol = book.symbol
        if not clearing.volume:
            events.append((AUCTION, symbol, None, 0, 0))
            return
        price = clearing.price
        events.append((AUCTION, symbol, price, clearing.volume, clearing.imbalance))
        buys = [(p, q) for p, q in clearing.buys if q]
        sells = [(p, q) for p, q in clearing.sells if q]
        b = s = 0
        buy_left = buys[0][1]
        sell_left = sells[0][1]
        while b < len(buys) and s < len(sells):
            buyer = buys[b][0]
            seller = sells[s][0]
            traded = min(buy_left, sell_left)
            book.trades += 1
            events.append(
                (
                    TRADE,
                    symbol,
                    book.trades,
                    price,
                    traded,
                    _id_of(buyer),
                    _id_of(seller),
                    buyer.account,
                    seller.account,
                    None,
                )
            )
            buy_left -= traded
            sell_left -= traded
            if not buy_left:
                b += 1
                if b < len(buys):
                    buy_left = buys[b][1]
            if not sell_left:
                s += 1
                if s < len(sells):
                    sell_left = sells[s][1]
        for participant, quantity in buys + sells:
            if isinstance(participant, Order):
                if quantity == participant.remaining:
                    self._remove(participant)
                else:
                    participant.remaining -= quantity
                    book_side = book.bids if participant.side == BUY else book.asks
                    level = book_side.levels[participant.price]
                    book_side.before.setdefault(participant.price, level.quantity)
                    level.quantity -= quantity
        book.reference = price

    # Queries, snapshots and the state hash.

    def depth(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Displayed (price, quantity) levels of a contract, best first: (bids, asks)."""
        book = self.books[symbol]
        return book.bids.depth(), book.asks.depth()

    def level_quantity(self, symbol: str, side: str, price: int) -> int:
        """Displayed quantity at one price (0 if none)."""
        book = self.books[symbol]
        level = (book.bids if side == BUY else book.asks).levels.get(price)
        return 0 if level is None else level.quantity

    def open_orders(self, symbol: str) -> tuple[list[Order], list[Order]]:
        """Resting orders of a contract in priority order: (bids, asks), AON orders included."""
        book = self.books[symbol]
        return list(_side_orders(book.bids)), list(_side_orders(book.asks))

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON-able data; `restore` rebuilds an identical engine."""
        timers = []
        for at, kind, key, _, payload in sorted(self._timers):
            if kind == _T_EXPIRE:
                order, reason = payload
                if self.orders.get(order.order_id) is not order:
                    continue
                timers.append([at, kind, key, reason])
            else:
                timers.append([at, kind, key, list(payload) if kind == _T_AUCTION else payload])
        books = []
        for symbol in sorted(self.books):
            book = self.books[symbol]
            books.append(
                {
                    "symbol": symbol,
                    "family": book.family,
                    "delivery_at": book.delivery_at,
                    "reference": book.reference,
                    "tick": book.tick,
                    "band": book.band,
                    "protection": book.protection,
                    "close_at": book.close_at,
                    "state": book.state,
                    "reopen_at": book.reopen_at,
                    "trades": book.trades,
                    "orders": [
                        [
                            o.order_id,
                            o.account,
                            o.side,
                            o.price,
                            o.remaining,
                            o.group,
                            o.stp_mode,
                            o.seq,
                            o.aon,
                            o.post_only,
                        ]
                        for side in (book.bids, book.asks)
                        for o in _side_orders(side)
                    ],
                }
            )
        blocks = [
            [
                b.block_id,
                b.account,
                b.side,
                b.family,
                b.price,
                b.quantity,
                b.group,
                b.seq,
                list(self.block_symbols[b.block_id]),
            ]
            for b in sorted(self.blocks.values(), key=_by_seq)
        ]
        return {
            "version": 1,
            "halt_ms": self.halt_ms,
            "day_offset_ms": self.day_offset_ms,
            "now": self.now,
            "seq": self.seq,
            "books": books,
            "blocks": blocks,
            "timers": timers,
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> MatchingEngine:
        """An engine in the state `snapshot` describes."""
        engine = cls(snapshot["halt_ms"], snapshot["day_offset_ms"])
        engine.now = snapshot["now"]
        for data in snapshot["books"]:
            book = Book(
                data["symbol"],
                data["family"],
                data["delivery_at"],
                data["reference"],
                data["tick"],
                data["band"],
                data["protection"],
                data["close_at"],
            )
            book.state = data["state"]
            book.reopen_at = data["reopen_at"]
            book.trades = data["trades"]
            engine.books[book.symbol] = book
            for oid, account, side, price, remaining, group, mode, seq, aon, post in data["orders"]:
                order = engine._rest(book, oid, account, side, price, remaining, group, mode)
                order.aon = aon
                order.post_only = post
                order.seq = seq
                if aon:
                    level = (book.bids if side == BUY else book.asks).levels[price]
                    level.quantity -= remaining
                    level.aon += 1
        for bid, account, side, family, price, quantity, group, seq, symbols in snapshot["blocks"]:
            engine.blocks[bid] = Block(bid, account, side, family, price, quantity, group, seq)
            engine.block_symbols[bid] = tuple(symbols)
        for at, kind, key, payload in snapshot["timers"]:
            if kind == _T_EXPIRE:
                engine._push_timer(at, kind, key, (engine.orders[key], CancelReason(payload)))
            else:
                engine._push_timer(at, kind, key, tuple(payload) if kind == _T_AUCTION else payload)
        engine.seq = snapshot["seq"]
        return engine

    def state_hash(self) -> str:
        """SHA-256 of the canonical snapshot: equal states give equal hashes."""
        data = json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()


class Clearing:
    """What one contract's call auction would do."""

    __slots__ = ("allocated", "buys", "imbalance", "partial_aon", "price", "sells", "volume")

    def __init__(self) -> None:
        self.price = 0
        self.volume = 0
        self.imbalance = 0
        self.buys: list[tuple[Order | Block, int]] = []
        self.sells: list[tuple[Order | Block, int]] = []
        self.allocated: dict[int, int] = {}
        self.partial_aon: list[int] = []


def _side_orders(side: Side) -> Iterable[Order]:
    for level in side.iter_levels():
        yield from level.orders.values()


def _by_seq(item: Order | Block) -> int:
    return item.seq


def _by_delivery(book: Book) -> tuple[int, str]:
    return book.delivery_at, book.symbol


def _id_of(participant: Order | Block) -> str:
    return participant.order_id if isinstance(participant, Order) else participant.block_id
