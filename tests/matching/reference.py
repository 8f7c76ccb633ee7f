"""A naive reference model of the matching engine's rules, for checking the engine against.

Written for obviousness, not speed: each book is a flat list of orders, priority is recomputed
by sorting on every step, auctions try every candidate price by summing from scratch. It shares
no code with the engine, only the rule book (docs/MATCHING.md), the names orders are entered
with (`matching.book`) and the output records (`matching.outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matching import book as B
from matching import outputs as O
from matching.outputs import CancelReason, RefusalReason, StateReason

INF = 1 << 62


@dataclass
class ROrder:
    order_id: str
    account: str
    side: str
    price: int
    remaining: int
    group: str
    stp_mode: str
    seq: int
    symbol: str
    aon: bool
    post_only: bool


@dataclass
class RBlock:
    block_id: str
    account: str
    side: str
    family: str
    price: int
    quantity: int
    seq: int
    symbols: tuple[str, ...]


@dataclass
class RBook:
    symbol: str
    family: str
    delivery_at: int
    reference: int
    tick: int
    band: int
    protection: int
    close_at: int
    state: str = O.PRE_OPEN
    reopen_at: int = 0
    trades: int = 0
    orders: list[ROrder] = field(default_factory=list)

    def side(self, side: str) -> list[ROrder]:
        """Orders of one side in priority order."""
        chosen = [o for o in self.orders if o.side == side]
        if side == B.BUY:
            return sorted(chosen, key=lambda o: (-o.price, o.seq))
        return sorted(chosen, key=lambda o: (o.price, o.seq))


def _crosses(side: str, limit: int, price: int) -> bool:
    """Does a maker at `price` satisfy an incoming order of `side` limited at `limit`?"""
    return price <= limit if side == B.BUY else price >= limit


class Reference:
    def __init__(self, halt_ms: int = 60_000, day_offset_ms: int = B.CST_DAY_OFFSET_MS) -> None:
        self.halt_ms = halt_ms
        self.day_offset_ms = day_offset_ms
        self.books: dict[str, RBook] = {}
        self.blocks: dict[str, RBlock] = {}
        self.halted_pre_open: dict[str, bool] = {}
        self.events: list[tuple[Any, ...]] = []
        self.now = 0
        self.seq = 0
        self.timer_seq = 0
        self.timers: list[list[Any]] = []  # [at, kind, key, tseq, payload]
        self.stop = ""

    def take_events(self) -> list[tuple[Any, ...]]:
        out, self.events = self.events, []
        return out

    def emit(self, *event: Any) -> None:
        self.events.append(tuple(event))

    def live(self, order_id: str) -> ROrder | None:
        for book in self.books.values():
            for o in book.orders:
                if o.order_id == order_id:
                    return o
        return None

    def account_orders(self, account: str) -> list[ROrder]:
        return [o for b in self.books.values() for o in b.orders if o.account == account]

    # Time.

    def push_timer(self, at: int, kind: int, key: str, payload: Any) -> None:
        self.timer_seq += 1
        self.timers.append([at, kind, key, self.timer_seq, payload])

    def advance(self, ts: int) -> None:
        while True:
            due = [t for t in self.timers if t[0] <= ts]
            if not due:
                break
            timer = min(due, key=lambda t: (t[0], t[1], t[2], t[3]))
            self.timers.remove(timer)
            at, kind, _, _, payload = timer
            self.now = max(self.now, at)
            if kind == 0:
                order, reason = payload
                book = self.books[order.symbol]
                if any(o is order for o in book.orders):
                    book.orders.remove(order)
                    self.emit(
                        O.EXPIRED,
                        order.symbol,
                        order.order_id,
                        order.account,
                        order.side,
                        order.remaining,
                        reason,
                    )
            elif kind == 1:
                book = self.books[payload]
                if book.state == O.HALTED and book.reopen_at == at:
                    self.auction([book])
            elif kind == 2:
                for symbol in payload:
                    if symbol in self.halted_pre_open:
                        self.halted_pre_open[symbol] = False
                self.auction([self.books[s] for s in payload if self.books[s].state == O.PRE_OPEN])
            elif kind == 3:
                self.close(self.books[payload])
            else:
                book = self.books[payload]
                if book.state == O.CLOSED:
                    book.state = O.DELIVERED
                    self.emit(O.STATE, book.symbol, O.DELIVERED, StateReason.DELIVERY)
        self.now = max(self.now, ts)

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
    ) -> None:
        self.advance(ts)
        close = delivery_at if close_at is None else close_at
        self.books[symbol] = RBook(
            symbol, family, delivery_at, reference, tick, band, protection, close
        )
        self.emit(O.STATE, symbol, O.PRE_OPEN, StateReason.LISTED)
        if open_at is not None:
            self.push_timer(open_at, 2, family, (symbol,))
        self.push_timer(close, 3, symbol, symbol)
        self.push_timer(delivery_at, 4, symbol, symbol)
        self.advance(self.now)

    def schedule_auction(self, ts: int, family: str, at: int, symbols: list[str]) -> None:
        self.advance(ts)
        for s in symbols:
            if s not in self.books or self.books[s].family != family:
                self.emit(O.OPERATOR_REJECTED, s, "schedule", RefusalReason.UNKNOWN_CONTRACT)
                return
            if self.books[s].state != O.PRE_OPEN:
                self.emit(O.OPERATOR_REJECTED, s, "schedule", RefusalReason.NOT_PRE_OPEN)
                return
        self.push_timer(max(at, self.now), 2, family, tuple(symbols))
        self.advance(self.now)

    # Orders.

    def submit(
        self,
        ts: int,
        symbol: str,
        order_id: str,
        account: str,
        side: str,
        price: int,
        quantity: int,
        tif: str = B.GTC,
        expire_at: int = 0,
        min_quantity: int = 0,
        all_or_none: bool = False,
        post_only: bool = False,
        stp_group: str = "",
        stp_mode: str = B.CANCEL_RESTING,
        market: bool = False,
    ) -> None:
        self.advance(ts)
        book = self.books.get(symbol)
        if book is None:
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.CONTRACT_NOT_TRADING)
        if self.live(order_id) or order_id in self.blocks:
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.DUPLICATE_ORDER_ID)
        if quantity <= 0:
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.INVALID_QUANTITY)
        if (market and price < 0) or (not market and price <= 0):
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.INVALID_PRICE)
        if price % book.tick:
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.PRICE_NOT_ON_TICK)
        if stp_mode not in B.STP_MODES:
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.INVALID_ORDER)
        group = stp_group or account
        special = tif != B.GTC or min_quantity or all_or_none or post_only or market
        if special and (
            tif not in B.TIME_IN_FORCE
            or min_quantity < 0
            or min_quantity > quantity
            or (post_only and (market or tif in (B.IOC, B.FOK) or all_or_none or min_quantity))
            or (market and tif not in (B.GTC, B.IOC))
        ):
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.INVALID_ORDER)
        if tif == B.GTD and expire_at <= self.now:
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.INVALID_EXPIRY)
        if book.state in (O.CLOSED, O.DELIVERED):
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.CONTRACT_CLOSED)
        immediate = market or tif in (B.IOC, B.FOK)
        continuous = book.state == O.CONTINUOUS
        if not continuous and (immediate or min_quantity):
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.NOT_CONTINUOUS)
        if market and book.reference and book.protection:
            if side == B.BUY:
                limit = book.reference + book.protection
                if price:
                    limit = min(limit, price)
            else:
                limit = book.reference - book.protection
                if price:
                    limit = max(limit, price)
        elif market:
            limit = price if price else (INF if side == B.BUY else -INF)
        else:
            limit = price
        if continuous and post_only and self.would_take(book, side, limit, quantity):
            return self.emit(O.REJECTED, symbol, order_id, CancelReason.POST_ONLY_WOULD_TAKE)
        expiry = 0
        if tif == B.GTD:
            expiry = expire_at
        elif tif == B.DAY:
            day = B.DAY_MS
            expiry = ((self.now - self.day_offset_ms) // day + 1) * day + self.day_offset_ms
        self.emit(O.ACCEPTED, symbol, order_id)
        if not continuous:
            order = self.rest(
                book,
                order_id,
                account,
                side,
                price,
                quantity,
                group,
                stp_mode,
                all_or_none,
                post_only,
            )
            if expiry:
                self.push_expiry(order, expiry, tif)
            return None
        need = quantity if (all_or_none or tif == B.FOK) else min_quantity
        trade = True
        if need and self.fillable(book, side, limit, quantity, group, stp_mode) < need:
            if tif == B.FOK:
                reason = CancelReason.FOK_NOT_FILLED
            elif all_or_none and tif == B.IOC:
                reason = CancelReason.AON_NOT_FILLED
            elif not all_or_none:
                reason = CancelReason.MIN_QUANTITY_NOT_MET
            else:
                reason = ""
            if reason:
                return self.emit(O.CANCELLED, symbol, order_id, account, side, quantity, reason)
            trade = False
        remaining = quantity
        self.stop = ""
        if trade:
            remaining = self.match(book, side, limit, quantity, order_id, account, group, stp_mode)
        if not remaining or self.stop == CancelReason.SELF_TRADE:
            return None
        if immediate:
            reason = CancelReason.MARKET_PROTECTION if market else CancelReason.UNFILLED_IOC
            return self.emit(O.CANCELLED, symbol, order_id, account, side, remaining, reason)
        order = self.rest(
            book, order_id, account, side, price, remaining, group, stp_mode, all_or_none, post_only
        )
        if expiry:
            self.push_expiry(order, expiry, tif)
        return None

    def push_expiry(self, order: ROrder, at: int, tif: str) -> None:
        reason = CancelReason.GOOD_TILL_DATE if tif == B.GTD else CancelReason.END_OF_DAY
        self.push_timer(at, 0, order.order_id, (order, reason))

    def rest(
        self,
        book: RBook,
        order_id: str,
        account: str,
        side: str,
        price: int,
        quantity: int,
        group: str,
        stp_mode: str,
        aon: bool,
        post_only: bool,
    ) -> ROrder:
        self.seq += 1
        order = ROrder(
            order_id,
            account,
            side,
            price,
            quantity,
            group,
            stp_mode,
            self.seq,
            book.symbol,
            aon,
            post_only,
        )
        book.orders.append(order)
        return order

    def band_ok(self, book: RBook, side: str, price: int) -> bool:
        if not book.band or not book.reference:
            return True
        return book.reference - book.band <= price <= book.reference + book.band

    def levels(self, book: RBook, side: str) -> list[tuple[int, list[ROrder]]]:
        """The makers an incoming order of `side` meets, grouped by price, best first."""
        makers = book.side(B.SELL if side == B.BUY else B.BUY)
        out: list[tuple[int, list[ROrder]]] = []
        for o in makers:
            if out and out[-1][0] == o.price:
                out[-1][1].append(o)
            else:
                out.append((o.price, [o]))
        return out

    def would_take(self, book: RBook, side: str, limit: int, quantity: int) -> bool:
        for price, makers in self.levels(book, side):
            if not _crosses(side, limit, price):
                return False
            if any(not m.aon or m.remaining <= quantity for m in makers):
                return True
        return False

    def fillable(
        self, book: RBook, side: str, limit: int, quantity: int, group: str, stp_mode: str
    ) -> int:
        return self.fill_cost(book, side, limit, quantity, group, stp_mode)[0]

    def fill_cost(
        self, book: RBook, side: str, limit: int, quantity: int, group: str, stp_mode: str
    ) -> tuple[int, int]:
        remaining = quantity
        cost = 0
        for price, makers in self.levels(book, side):
            if (
                not remaining
                or not _crosses(side, limit, price)
                or not self.band_ok(book, side, price)
            ):
                break
            for m in makers:
                if m.aon and m.remaining > remaining:
                    continue
                if m.group == group:
                    if stp_mode == B.CANCEL_RESTING:
                        continue
                    return quantity - remaining, cost
                take = min(remaining, m.remaining)
                remaining -= take
                cost += take * price
                if not remaining:
                    break
        return quantity - remaining, cost

    def match(
        self,
        book: RBook,
        side: str,
        limit: int,
        remaining: int,
        order_id: str,
        account: str,
        group: str,
        stp_mode: str,
    ) -> int:
        self.stop = ""
        last = 0
        for price, makers in self.levels(book, side):
            if not remaining or not _crosses(side, limit, price):
                break
            if not self.band_ok(book, side, price):
                self.halt_book(book, StateReason.PRICE_BAND)
                self.stop = StateReason.PRICE_BAND
                break
            for m in makers:
                if not remaining:
                    break
                if m.aon and m.remaining > remaining:
                    continue
                if m.group == group:
                    remaining = self.self_trade(
                        book, m, remaining, order_id, account, side, stp_mode
                    )
                    if self.stop:
                        break
                    continue
                take = min(remaining, m.remaining)
                remaining -= take
                m.remaining -= take
                book.trades += 1
                self.emit(
                    O.TRADE,
                    book.symbol,
                    book.trades,
                    price,
                    take,
                    order_id,
                    m.order_id,
                    account,
                    m.account,
                    side,
                )
                last = price
                if not m.remaining:
                    book.orders.remove(m)
            if self.stop:
                break
        if last:
            book.reference = last
        return remaining

    def self_trade(
        self,
        book: RBook,
        m: ROrder,
        remaining: int,
        order_id: str,
        account: str,
        side: str,
        mode: str,
    ) -> int:
        sym = book.symbol
        if mode == B.DECREMENT:
            cut = min(remaining, m.remaining)
            if cut == m.remaining:
                book.orders.remove(m)
                self.emit(
                    O.CANCELLED, sym, m.order_id, m.account, m.side, cut, CancelReason.SELF_TRADE
                )
            else:
                m.remaining -= cut
                self.emit(
                    O.REDUCED,
                    sym,
                    m.order_id,
                    m.account,
                    m.side,
                    cut,
                    m.remaining,
                    CancelReason.SELF_TRADE,
                )
            remaining -= cut
            if remaining:
                self.emit(
                    O.REDUCED, sym, order_id, account, side, cut, remaining, CancelReason.SELF_TRADE
                )
            else:
                self.emit(O.CANCELLED, sym, order_id, account, side, cut, CancelReason.SELF_TRADE)
                self.stop = CancelReason.SELF_TRADE
            return remaining
        if mode != B.CANCEL_INCOMING:
            book.orders.remove(m)
            self.emit(
                O.CANCELLED,
                sym,
                m.order_id,
                m.account,
                m.side,
                m.remaining,
                CancelReason.SELF_TRADE,
            )
        if mode != B.CANCEL_RESTING:
            self.emit(O.CANCELLED, sym, order_id, account, side, remaining, CancelReason.SELF_TRADE)
            self.stop = CancelReason.SELF_TRADE
        return remaining

    def cancel(self, ts: int, order_id: str, account: str | None = None) -> None:
        self.advance(ts)
        order = self.live(order_id)
        if order is None:
            block = self.blocks.get(order_id)
            if block is None:
                self.emit(O.CANCEL_REJECTED, "", order_id, RefusalReason.UNKNOWN_ORDER)
            elif account is not None and block.account != account:
                self.emit(O.CANCEL_REJECTED, block.family, order_id, RefusalReason.NOT_ORDER_OWNER)
            else:
                self.drop_block(block, O.CANCELLED, CancelReason.REQUESTED)
            return
        if account is not None and order.account != account:
            self.emit(O.CANCEL_REJECTED, order.symbol, order_id, RefusalReason.NOT_ORDER_OWNER)
            return
        self.books[order.symbol].orders.remove(order)
        self.emit(
            O.CANCELLED,
            order.symbol,
            order_id,
            order.account,
            order.side,
            order.remaining,
            CancelReason.REQUESTED,
        )

    def cancel_all(self, ts: int, account: str) -> None:
        self.advance(ts)
        mine = sorted(self.account_orders(account), key=lambda o: o.seq)
        blocks = sorted(
            (b for b in self.blocks.values() if b.account == account), key=lambda b: b.seq
        )
        for o in mine:
            self.books[o.symbol].orders.remove(o)
            self.emit(
                O.CANCELLED,
                o.symbol,
                o.order_id,
                o.account,
                o.side,
                o.remaining,
                CancelReason.KILL_SWITCH,
            )
        for b in blocks:
            self.drop_block(b, O.CANCELLED, CancelReason.KILL_SWITCH)
        self.emit(O.CANCELLED_ALL, account, len(mine) + len(blocks))

    def amend(
        self, ts: int, order_id: str, account: str | None, price: int = 0, quantity: int = 0
    ) -> None:
        self.advance(ts)
        order = self.live(order_id)
        if order is None:
            reason = (
                RefusalReason.NOT_AMENDABLE
                if order_id in self.blocks
                else RefusalReason.UNKNOWN_ORDER
            )
            return self.emit(O.AMEND_REJECTED, "", order_id, reason)
        book = self.books[order.symbol]
        if account is not None and order.account != account:
            return self.emit(O.AMEND_REJECTED, book.symbol, order_id, RefusalReason.NOT_ORDER_OWNER)
        new_price = price or order.price
        new_qty = quantity or order.remaining
        if price < 0 or quantity < 0 or new_price % book.tick:
            reason = RefusalReason.INVALID_QUANTITY if quantity < 0 else RefusalReason.INVALID_PRICE
            return self.emit(O.AMEND_REJECTED, book.symbol, order_id, reason)
        if new_price == order.price and new_qty <= order.remaining:
            order.remaining = new_qty
            return self.emit(
                O.AMENDED,
                book.symbol,
                order_id,
                order.account,
                order.side,
                new_price,
                new_qty,
                True,
            )
        continuous = book.state == O.CONTINUOUS
        if continuous and order.post_only and self.would_take(book, order.side, new_price, new_qty):
            return self.emit(
                O.AMEND_REJECTED, book.symbol, order_id, RefusalReason.POST_ONLY_WOULD_TAKE
            )
        book.orders.remove(order)
        self.emit(
            O.AMENDED, book.symbol, order_id, order.account, order.side, new_price, new_qty, False
        )
        remaining = new_qty
        levels = self.levels(book, order.side)
        if continuous and levels and _crosses(order.side, new_price, levels[0][0]):
            trade = True
            if order.aon:
                trade = (
                    self.fillable(book, order.side, new_price, new_qty, order.group, order.stp_mode)
                    >= new_qty
                )
            if trade:
                remaining = self.match(
                    book,
                    order.side,
                    new_price,
                    new_qty,
                    order_id,
                    order.account,
                    order.group,
                    order.stp_mode,
                )
                if self.stop == CancelReason.SELF_TRADE:
                    return None
        if not remaining:
            return None
        self.seq += 1
        order.seq = self.seq
        order.price = new_price
        order.remaining = remaining
        book.orders.append(order)
        return None

    # Blocks.

    def submit_block(
        self,
        ts: int,
        block_id: str,
        account: str,
        side: str,
        symbols: list[str],
        price: int,
        quantity: int,
        stp_group: str = "",
        stp_mode: str = B.CANCEL_RESTING,
    ) -> None:
        self.advance(ts)
        known = [self.books.get(s) for s in symbols]
        family = known[0].family if symbols and known[0] is not None else ""
        if not symbols or any(b is None for b in known):
            return self.emit(O.REJECTED, family, block_id, CancelReason.CONTRACT_NOT_TRADING)
        books = [b for b in known if b is not None]
        if self.live(block_id) or block_id in self.blocks:
            return self.emit(O.REJECTED, family, block_id, CancelReason.DUPLICATE_ORDER_ID)
        if quantity <= 0:
            return self.emit(O.REJECTED, family, block_id, CancelReason.INVALID_QUANTITY)
        if price <= 0:
            return self.emit(O.REJECTED, family, block_id, CancelReason.INVALID_PRICE)
        start = books[0].delivery_at
        if stp_mode not in B.STP_MODES or any(
            b.family != family or b.delivery_at != start + i * B.HOUR_MS
            for i, b in enumerate(books)
        ):
            return self.emit(O.REJECTED, family, block_id, CancelReason.INVALID_BLOCK)
        states = {b.state for b in books}
        if states & {O.CLOSED, O.DELIVERED}:
            return self.emit(O.REJECTED, family, block_id, CancelReason.CONTRACT_CLOSED)
        if len(states) > 1 or O.HALTED in states:
            return self.emit(O.REJECTED, family, block_id, CancelReason.NOT_CONTINUOUS)
        group = stp_group or account
        self.emit(O.ACCEPTED, family, block_id)
        if O.PRE_OPEN in states:
            self.seq += 1
            self.blocks[block_id] = RBlock(
                block_id, account, side, family, price, quantity, self.seq, tuple(symbols)
            )
            return None
        total_cost = 0
        total = quantity * len(books)
        for book in books:
            filled, cost = self.fill_cost(
                book, side, INF if side == B.BUY else -INF, quantity, group, stp_mode
            )
            if filled < quantity:
                return self.emit(
                    O.CANCELLED,
                    family,
                    block_id,
                    account,
                    side,
                    total,
                    CancelReason.BLOCK_NOT_FILLED,
                )
            total_cost += cost
        limit = price * total
        if total_cost > limit if side == B.BUY else total_cost < limit:
            return self.emit(
                O.CANCELLED, family, block_id, account, side, total, CancelReason.BLOCK_PRICE
            )
        for book in books:
            banded = book.band and book.reference
            if side == B.BUY:
                limit = book.reference + book.band if banded else INF
            else:
                limit = book.reference - book.band if banded else -INF
            self.match(book, side, limit, quantity, block_id, account, group, stp_mode)
        return None

    def drop_block(self, block: RBlock, kind: str, reason: str) -> None:
        del self.blocks[block.block_id]
        self.emit(
            kind,
            block.family,
            block.block_id,
            block.account,
            block.side,
            block.quantity * len(block.symbols),
            reason,
        )

    # Operators and lifecycle.

    def halt(self, ts: int, symbol: str) -> None:
        self.advance(ts)
        book = self.books.get(symbol)
        if book is None:
            self.emit(O.OPERATOR_REJECTED, symbol, "halt", RefusalReason.UNKNOWN_CONTRACT)
        elif book.state == O.PRE_OPEN:
            self.halted_pre_open[symbol] = True
            self.halt_book(book, StateReason.OPERATOR)
        elif book.state != O.CONTINUOUS:
            self.emit(O.OPERATOR_REJECTED, symbol, "halt", RefusalReason.NOT_CONTINUOUS)
        else:
            self.halt_book(book, StateReason.OPERATOR)

    def resume(self, ts: int, symbol: str) -> None:
        self.advance(ts)
        book = self.books.get(symbol)
        if book is None:
            self.emit(O.OPERATOR_REJECTED, symbol, "resume", RefusalReason.UNKNOWN_CONTRACT)
        elif book.state == O.HALTED and self.halted_pre_open.get(symbol, False):
            del self.halted_pre_open[symbol]
            book.state = O.PRE_OPEN
            self.emit(O.STATE, symbol, O.PRE_OPEN, StateReason.RESUMED)
        elif book.state in (O.HALTED, O.PRE_OPEN):
            if self.halted_pre_open.pop(symbol, None) is not None:
                book.state = O.PRE_OPEN
            self.auction([book])
        else:
            self.emit(O.OPERATOR_REJECTED, symbol, "resume", RefusalReason.NOT_HALTED)

    def halt_book(self, book: RBook, reason: str) -> None:
        book.state = O.HALTED
        self.emit(O.STATE, book.symbol, O.HALTED, reason)
        if reason == StateReason.PRICE_BAND:
            book.reopen_at = self.now + self.halt_ms
            self.push_timer(book.reopen_at, 1, book.symbol, book.symbol)
        else:
            book.reopen_at = 0

    def close(self, book: RBook) -> None:
        if book.state in (O.CLOSED, O.DELIVERED):
            return
        for o in sorted(book.orders, key=lambda o: o.seq):
            book.orders.remove(o)
            self.emit(
                O.EXPIRED,
                book.symbol,
                o.order_id,
                o.account,
                o.side,
                o.remaining,
                CancelReason.GATE_CLOSURE,
            )
        for b in sorted(self.blocks.values(), key=lambda b: b.seq):
            if book.symbol in b.symbols:
                self.drop_block(b, O.EXPIRED, CancelReason.GATE_CLOSURE)
        self.halted_pre_open.pop(book.symbol, None)
        book.state = O.CLOSED
        self.emit(O.STATE, book.symbol, O.CLOSED, StateReason.GATE_CLOSURE)

    def auction(self, books: list[RBook]) -> None:
        if not books:
            return
        books = sorted(books, key=lambda b: (b.delivery_at, b.symbol))
        names = {b.symbol for b in books}
        blocks = sorted(
            (b for b in self.blocks.values() if set(b.symbols) <= names), key=lambda b: b.seq
        )
        excluded: set[int] = set()
        while True:
            results = {b.symbol: self.clear(b, blocks, excluded) for b in books}
            bad = []
            for block in blocks:
                if block.seq in excluded:
                    continue
                legs = [results[s] for s in block.symbols]
                if any(r["alloc"].get(block.seq, 0) < block.quantity for r in legs):
                    bad.append(block.seq)
                    continue
                paid = sum(r["price"] for r in legs)
                limit = block.price * len(legs)
                if (paid > limit) if block.side == B.BUY else (paid < limit):
                    bad.append(block.seq)
            for r in results.values():
                bad.extend(r["partial_aon"])
            if not bad:
                break
            excluded.add(max(bad))
        for block in blocks:
            if block.seq in excluded:
                self.drop_block(block, O.CANCELLED, CancelReason.BLOCK_NOT_ACCEPTED)
            else:
                del self.blocks[block.block_id]
        for book in books:
            self.execute(book, results[book.symbol])
            reason = StateReason.OPENED if book.state == O.PRE_OPEN else StateReason.REOPENED
            book.state = O.CONTINUOUS
            book.reopen_at = 0
            self.emit(O.STATE, book.symbol, O.CONTINUOUS, reason)

    def clear(self, book: RBook, blocks: list[RBlock], excluded: set[int]) -> dict[str, Any]:
        bids = [o for o in book.side(B.BUY) if o.seq not in excluded]
        asks = [o for o in book.side(B.SELL) if o.seq not in excluded]
        legs = [b for b in blocks if b.seq not in excluded and book.symbol in b.symbols]
        buy_legs = [b for b in legs if b.side == B.BUY]
        sell_legs = [b for b in legs if b.side == B.SELL]
        ref = book.reference
        best = None
        for p in sorted({o.price for o in bids + asks} | {ref}):
            demand = sum(b.quantity for b in buy_legs) + sum(
                o.remaining for o in bids if o.price >= p
            )
            supply = sum(b.quantity for b in sell_legs) + sum(
                o.remaining for o in asks if o.price <= p
            )
            rank = (-min(demand, supply), abs(demand - supply), abs(p - ref), p)
            if best is None or rank < best[0]:
                best = (rank, p, min(demand, supply), demand - supply)
        assert best is not None
        _, price, volume, imbalance = best
        out: dict[str, Any] = {
            "price": price,
            "volume": volume,
            "imbalance": imbalance,
            "buys": [],
            "sells": [],
            "alloc": {},
            "partial_aon": [],
        }
        if not volume:
            out["price"] = 0
            out["imbalance"] = 0
            return out
        for parts, key, eligible in (
            (buy_legs, "buys", [o for o in bids if o.price >= price]),
            (sell_legs, "sells", [o for o in asks if o.price <= price]),
        ):
            left = volume
            for x in [*parts, *eligible]:
                size = x.quantity if isinstance(x, RBlock) else x.remaining
                take = min(left, size)
                left -= take
                out[key].append((x, take))
                out["alloc"][x.seq] = take
                if isinstance(x, ROrder) and x.aon and 0 < take < x.remaining:
                    out["partial_aon"].append(x.seq)
        return out

    def execute(self, book: RBook, result: dict[str, Any]) -> None:
        if not result["volume"]:
            self.emit(O.AUCTION, book.symbol, None, 0, 0)
            return
        price = result["price"]
        self.emit(O.AUCTION, book.symbol, price, result["volume"], result["imbalance"])
        # Expand each allocation into units and pair unit by unit, then merge runs into trades.
        buys = [[x, q] for x, q in result["buys"] if q]
        sells = [[x, q] for x, q in result["sells"] if q]
        while buys and sells:
            b, s = buys[0], sells[0]
            take = min(b[1], s[1])
            book.trades += 1
            self.emit(
                O.TRADE,
                book.symbol,
                book.trades,
                price,
                take,
                _id(b[0]),
                _id(s[0]),
                b[0].account,
                s[0].account,
                None,
            )
            b[1] -= take
            s[1] -= take
            if not b[1]:
                buys.pop(0)
            if not s[1]:
                sells.pop(0)
        for x, q in result["buys"] + result["sells"]:
            if isinstance(x, ROrder) and q:
                x.remaining -= q
                if not x.remaining:
                    book.orders.remove(x)
        book.reference = price

    # Views.

    def depth(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        book = self.books[symbol]
        out: list[list[tuple[int, int]]] = []
        for side in (B.BUY, B.SELL):
            levels: dict[int, int] = {}
            for o in book.side(side):
                if not o.aon:
                    levels[o.price] = levels.get(o.price, 0) + o.remaining
            out.append([(p, q) for p, q in levels.items() if q])
        return out[0], out[1]


def _id(x: ROrder | RBlock) -> str:
    return x.order_id if isinstance(x, ROrder) else x.block_id
