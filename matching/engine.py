"""The matching engine: the books of hourly compute contracts, their auctions and their lifecycle.

Pure and deterministic: no I/O, no clock, no randomness, integers only. Every command carries
the log time `ts` (ms) of the record that brought it; time advances only when a command arrives,
and timed work that falls due by then runs first (`matching/lifecycle.py`). Outputs are
appended to `MatchingEngine.events`: typed tuples, whose kinds, layouts, reasons and states
`matching.outputs` defines.

`MatchingEngine` is the one entry point. It is built from one class per concern, each in a
module named for it (`matching/state.py` lists them, and says why inheritance keeps the hot path
as fast as one class): the data structures in `book.py`, continuous matching in
`continuous.py`, call auctions in `auction.py`, the lifecycle and operators in `lifecycle.py`,
snapshots and the state hash in `snapshot.py`. This module enters orders: submit, cancel, amend,
the kill switch, block orders.

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

The hot path is a plain limit (or IOC) order in continuous trading: `submit` checks it with one
compound test, matches it (`_match`) and rests it inline; everything else goes to
`_submit_special`.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Collection, Sequence
from typing import Final

from matching.book import (
    BUY,
    CANCEL_RESTING,
    DAY,
    DAY_MS,
    FOK,
    GTC,
    GTD,
    HOUR_MS,
    INFINITY,
    IOC,
    STP_MODES,
    TIME_IN_FORCE,
    AccountOrders,
    Block,
    Book,
    Level,
    Order,
    by_seq,
)
from matching.lifecycle import Lifecycle
from matching.outputs import (
    ACCEPTED,
    AMEND_REJECTED,
    AMENDED,
    CANCEL_REJECTED,
    CANCELLED,
    CANCELLED_ALL,
    CLOSED,
    CONTINUOUS,
    DELIVERED,
    HALTED,
    PRE_OPEN,
    REJECTED,
    CancelReason,
    RefusalReason,
)
from matching.outputs import Side as OrderSide
from matching.state import TIMER_EXPIRE

# The reasons of the order paths, read as globals: an enum member's attribute read costs some
# 60 ns more, on every cancel, IOC remainder and self-trade.
_REQUESTED: Final = CancelReason.REQUESTED
_UNFILLED_IOC: Final = CancelReason.UNFILLED_IOC
_SELF_TRADE: Final = CancelReason.SELF_TRADE
_KILL_SWITCH: Final = CancelReason.KILL_SWITCH
_MARKET_PROTECTION: Final = CancelReason.MARKET_PROTECTION


class MatchingEngine(Lifecycle):
    """Every book of the contracts it was given, their schedules, and the events they caused."""

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
            # `_stop` is "" unless matching stopped: the string test spares the comparison
            # with an enum member, which compiled is a generic rich comparison.
            if not quantity or (self._stop and self._stop == _SELF_TRADE):
                return
        if tif == IOC:
            self.events.append(
                (CANCELLED, symbol, order_id, account, side, quantity, _UNFILLED_IOC)
            )
            return
        self.seq = seq = self.seq + 1
        owner = self.by_account.get(account)
        if owner is None:
            owner = self.by_account[account] = AccountOrders()
        level = own.levels.get(price)
        if level is None:
            level = own.levels[price] = Level(price)
            insort(own.keys, -limit)
        order = Order(
            order_id,
            account,
            side,
            price,
            quantity,
            group,
            stp_mode,
            seq,
            book,
            level,
            owner,
            False,
            False,
        )
        level.add(order)
        own.before.setdefault(price, level.quantity)
        level.quantity += quantity
        self.orders.add(order_id, order)
        owner.add(order)

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
        self._push_timer(at, TIMER_EXPIRE, order.order_id, (order, reason))

    def refuse(self, ts: int, symbol: str, order_id: str, reason: CancelReason) -> None:
        """Reject an order its caller found cannot be entered (a rule of the exchange beyond
        the book's: a resale its seller no longer holds), after the timers due at `ts`."""
        self.advance(ts)
        self.events.append((REJECTED, symbol, order_id, reason))

    def cancel(
        self,
        ts: int,
        order_id: str,
        account: str | None = None,
        reason: CancelReason = _REQUESTED,
    ) -> None:
        """Cancel what remains of an order (or a waiting block), at its owner's request unless
        `reason` says otherwise."""
        if ts >= self._deadline:
            self._run_timers(ts)
        if ts > self.now:
            self.now = ts
        if self.in_auction and order_id in self.in_auction:
            self._refuse_in_auction(False, order_id)
            return
        # One operation on the index by id, the largest dict: popped here, put back if refused.
        order = self.orders.pop(order_id)
        if order is None:
            block = self.blocks.get(order_id)
            if block is None:
                self.events.append((CANCEL_REJECTED, "", order_id, RefusalReason.UNKNOWN_ORDER))
            elif account is not None and block.account != account:
                self.events.append(
                    (CANCEL_REJECTED, block.family, order_id, RefusalReason.NOT_ORDER_OWNER)
                )
            else:
                self._drop_block(block, reason)
            return
        if account is not None and order.account != account:
            self.orders.add(order_id, order)
            self.events.append(
                (CANCEL_REJECTED, order.book.symbol, order_id, RefusalReason.NOT_ORDER_OWNER)
            )
            return
        self._unlist(order)
        self.events.append(
            (
                CANCELLED,
                order.book.symbol,
                order_id,
                order.account,
                order.side,
                order.remaining,
                reason,
            )
        )

    def cancel_all(self, ts: int, account: str, families: Collection[str] | None = None) -> None:
        """Cancel every open order and waiting block of an account (the kill switch), or only
        those of `families` (the part of the kill switch one partition acts on)."""
        self.advance(ts)
        # What awaits the day-ahead auction's result stays: the result will trade it.
        in_auction = self.in_auction
        listed = self.by_account.get(account)
        mine = sorted(
            (
                o
                for o in (listed.orders if listed is not None else ())
                if (families is None or o.book.family in families) and o.order_id not in in_auction
            ),
            key=by_seq,
        )
        blocks = sorted(
            (
                b
                for b in self.blocks.values()
                if b.account == account
                and (families is None or b.family in families)
                and b.block_id not in in_auction
            ),
            key=by_seq,
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
        if order_id in self.in_auction:
            self._refuse_in_auction(True, order_id)
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
        order.level = level
        level.add(order)
        if order.aon:
            level.aon += 1
        else:
            book_side.before.setdefault(new_price, level.quantity)
            level.quantity += remaining
        self.orders.add(order_id, order)
        order.owner.add(order)

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
        exclusive: bool = False,
    ) -> None:
        """Enter a block: `quantity` in every hour of `symbols`, at most (buy) or at least (sell)
        `price` on average, filled in all hours or none. An `exclusive` block (an alternative
        of an exclusive group) waits for a day-ahead or intraday auction to decide it, even in
        continuous trading."""
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
        if PRE_OPEN in states or exclusive:
            self.seq += 1
            block = Block(block_id, account, side, family, price, quantity, group, self.seq)
            self.blocks[block_id] = block
            self.block_symbols[block_id] = tuple(symbols)
            if exclusive:
                self.exclusive.add(block_id)
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
