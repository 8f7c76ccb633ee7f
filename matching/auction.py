"""Call auctions: opening, scheduled and reopening auctions clear each contract at one price.

1. Candidates are the limit prices of the orders taking part plus the reference price.
2. Choose the candidate that maximises executed volume min(demand, supply); then the one with
   the smallest |demand - supply|; then the one nearest the reference price; then the lower.
3. The executed volume is allocated by price, then time priority on each side (block legs,
   which take part at any price, come first), and buy and sell allocations are paired in that
   order into trades at the clearing price.
4. An AON order that would be filled only in part, or a block that would not be filled in
   every hour or whose average clearing price breaks its limit, makes the auction recompute
   without it: the newest such order is removed first (an AON order keeps resting, a block is
   rejected whole), until no such order remains. Self-trade prevention does not apply.

The day-ahead auction is solved outside the engine, over every partition's books at once
(`matching/dayahead.py`): `day_ahead_bids` gives what this engine brings to it at the gate and
freezes it, `apply_day_ahead` carries out the result (its trades, the blocks it did not accept)
and opens the day's books through a call auction of what arrived after the gate.

`CallAuctions` adds the auction to the engine's state, snapshots and continuous matching
(`matching/state.py` says why the engine is built from one class per concern, in one chain);
the lifecycle (`matching/lifecycle.py`) runs it when a contract opens, reopens after a halt, or
a scheduled family auction falls due. Auctions are rare next to orders, so this code is written
for clarity rather than speed.
"""

from __future__ import annotations

from collections.abc import Iterable

from matching.book import BUY, DAY_MS, SELL, Block, Book, Order, by_seq, side_orders
from matching.continuous import ContinuousMatching
from matching.outputs import (
    AMEND_REJECTED,
    AUCTION,
    CANCEL_REJECTED,
    CONTINUOUS,
    DELIVERED,
    PRE_OPEN,
    STATE,
    TRADE,
    CancelReason,
    RefusalReason,
    StateReason,
)


class CallAuctions(ContinuousMatching):
    """Uncrossing books at one price each, with the waiting blocks that fit in them."""

    def _auction(self, books: list[Book], reason: StateReason | None = None) -> None:
        """Uncross `books` together at one price each, with the blocks that fit in them (not
        an exclusive group's: only the welfare auction decides those)."""
        if not books:
            return
        books = sorted(books, key=_by_delivery)
        in_auction = {b.symbol for b in books}
        exclusive = self.exclusive
        blocks = [
            self.blocks[block_id]
            for block_id, symbols in self.block_symbols.items()
            if set(symbols) <= in_auction and block_id not in exclusive
        ]
        blocks.sort(key=by_seq)
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
            why = reason or (StateReason.OPENED if book.state == PRE_OPEN else StateReason.REOPENED)
            book.state = CONTINUOUS
            book.reopen_at = 0
            self.events.append((STATE, book.symbol, CONTINUOUS, why))

    def day_ahead_bids(self, day_start: int) -> tuple[list[Order], list[Block], list[str]]:
        """The orders resting in the pre-open books delivering in the day from `day_start`
        and the waiting blocks wholly in them, oldest first, and those books: what this
        engine brings to that day's auction. The orders stay frozen (no cancel, no amend)
        until `apply_day_ahead`, and the books can be neither halted nor resumed."""
        books = self._day_books(day_start)
        self.day_ahead_books.update(b.symbol for b in books)
        return self._freeze(books)

    def withhold_halted(self, day_start: int) -> list[str]:
        """The books delivering in the day from `day_start` that an operator halted in
        pre-open, kept out of that day's auction as its gate passes: they missed it, so a
        resume opens them through a call auction of their own."""
        end = day_start + DAY_MS
        withheld = sorted(
            s
            for s, awaiting in self.halted_pre_open.items()
            if awaiting and day_start <= self.books[s].delivery_at < end
        )
        for symbol in withheld:
            self.halted_pre_open[symbol] = False
        return withheld

    def session_bids(self, closing_after: int) -> tuple[list[Order], list[Block], list[str]]:
        """What this engine brings to an intraday auction: every continuous book whose gate
        closure is at `closing_after` or later taken out of continuous trading (pre-open
        until the result), its resting orders and the waiting blocks wholly in those books,
        oldest first, frozen as `day_ahead_bids` freezes them, and those books."""
        books = sorted(
            (
                b
                for b in self.books.values()
                if b.state == CONTINUOUS and b.close_at >= closing_after
            ),
            key=_by_delivery,
        )
        self.suspend_for_session([b.symbol for b in books])
        for book in books:
            self.events.append((STATE, book.symbol, PRE_OPEN, StateReason.INTRADAY_AUCTION))
        return self._freeze(books)

    def suspend_for_session(self, symbols: Iterable[str]) -> None:
        """Take the continuous books `symbols` out of continuous trading for an intraday
        auction (a replica does it where the partition's stored collection says)."""
        for symbol in symbols:
            self.books[symbol].state = PRE_OPEN
            self.session_books.add(symbol)

    def can_fill(self, buy_id: str, sell_id: str, quantity: int) -> bool:
        """Whether an auction's trade of `quantity` between `buy_id` and `sell_id` can be
        carried out here: both rest (or wait, as blocks) with at least that much."""
        for order_id in (buy_id, sell_id):
            order = self.orders.get(order_id)
            if order is not None:
                if order.remaining < quantity:
                    return False
            elif order_id not in self.blocks:
                return False
        return True

    def drop_undecided(self, block_ids: Iterable[str]) -> None:
        """Cancel the waiting blocks `block_ids` as not accepted: alternatives of exclusive
        groups an auction decided without them (they reached their books too late for it)."""
        for block_id in sorted(block_ids):
            block = self.blocks.get(block_id)
            if block is not None and block_id not in self.in_auction:
                self._drop_block(block, CancelReason.BLOCK_NOT_ACCEPTED)

    def _freeze(self, books: list[Book]) -> tuple[list[Order], list[Block], list[str]]:
        symbols = {b.symbol for b in books}
        orders = sorted(
            (o for b in books for side in (b.bids, b.asks) for o in side_orders(side)), key=by_seq
        )
        blocks = sorted(
            (b for b in self.blocks.values() if set(self.block_symbols[b.block_id]) <= symbols),
            key=by_seq,
        )
        self.in_auction.update(o.order_id for o in orders)
        self.in_auction.update(b.block_id for b in blocks)
        return orders, blocks, sorted(symbols)

    def apply_day_ahead(
        self,
        trades: Iterable[tuple[str, str, str, int, int]],
        rejected: Iterable[str],
        decided: Iterable[str],
        symbols: Iterable[str],
    ) -> None:
        """Carry out the day-ahead auction's result for the books `symbols` (those one
        partition brought): each trade (symbol, buy id, sell id, quantity, price), the waiting
        blocks it did not accept dropped, the orders it `decided` on free again, then the books
        opened through a call auction of the orders that arrived after the gate (the caller
        has advanced the clock)."""
        events = self.events
        filled: dict[str, int] = {}
        for symbol, buy_id, sell_id, quantity, price in trades:
            book = self.books[symbol]
            buyer = self.orders.get(buy_id) or self.blocks[buy_id]
            seller = self.orders.get(sell_id) or self.blocks[sell_id]
            book.trades += 1
            events.append(
                (TRADE, symbol, book.trades, price, quantity, buy_id, sell_id,
                 buyer.account, seller.account, None)
            )  # fmt: skip
            book.reference = price
            for participant in (buyer, seller):
                if isinstance(participant, Order):
                    self._take_from_resting(participant, quantity)
                else:
                    filled[participant.block_id] = filled.get(participant.block_id, 0) + quantity
        for block_id in filled:
            del self.blocks[block_id]
            del self.block_symbols[block_id]
            self.exclusive.discard(block_id)
        for block_id in rejected:
            block = self.blocks.get(block_id)
            if block is not None:
                self._drop_block(block, CancelReason.BLOCK_NOT_ACCEPTED)
        self.in_auction.difference_update(decided)
        brought = list(symbols)
        self.day_ahead_books.difference_update(brought)
        books = [self.books[s] for s in brought if s in self.books]
        sessions = [b for b in books if b.symbol in self.session_books]
        if not sessions:
            self._auction([b for b in books if b.state == PRE_OPEN])
            return
        # An intraday auction's books reopen, or close if their gate closure fell due meanwhile.
        self.session_books.difference_update(b.symbol for b in sessions)
        for book in sessions:
            delisted = self.close_after_session.pop(book.symbol, None)
            if delisted is None:
                continue
            self._close(book, delisted)
            if not delisted and self.now >= book.delivery_at:
                # Its delivery fell due too while it waited: the timer found it open.
                book.state = DELIVERED
                self.events.append((STATE, book.symbol, DELIVERED, StateReason.DELIVERY))
        self._auction([b for b in sessions if b.state == PRE_OPEN], StateReason.INTRADAY_AUCTION)

    def open_day(self, day_start: int) -> None:
        """Open the pre-open books delivering in the day from `day_start` through a call
        auction (a day whose day-ahead auction had passed when they were listed)."""
        self._auction(self._day_books(day_start))

    def _day_books(self, day_start: int) -> list[Book]:
        """The pre-open books delivering in the day from `day_start`."""
        end = day_start + DAY_MS
        return [
            b
            for b in self.books.values()
            if b.state == PRE_OPEN and day_start <= b.delivery_at < end
        ]

    def _take_from_resting(self, order: Order, quantity: int) -> None:
        """Fill `quantity` of a resting order outside continuous matching."""
        if quantity == order.remaining:
            self._remove(order)
            return
        order.remaining -= quantity
        book = order.book
        book_side = book.bids if order.side == BUY else book.asks
        level = book_side.levels[order.price]
        if not order.aon:
            book_side.before.setdefault(order.price, level.quantity)
            level.quantity -= quantity

    def _refuse_in_auction(self, amend: bool, order_id: str) -> None:
        """Refuse a cancel (or an amend) of an order awaiting the day-ahead auction's result."""
        order = self.orders.get(order_id)
        where = order.book.symbol if order is not None else self.blocks[order_id].family
        if amend:
            self.events.append((AMEND_REJECTED, where, order_id, RefusalReason.IN_AUCTION))
        else:
            self.events.append((CANCEL_REJECTED, where, order_id, RefusalReason.IN_AUCTION))

    def _clear(self, book: Book, blocks: list[Block], excluded: set[int]) -> Clearing:
        """The clearing price, volume and allocations of one contract (no side effects)."""
        bids = [o for o in side_orders(book.bids) if o.seq not in excluded]
        asks = [o for o in side_orders(book.asks) if o.seq not in excluded]
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


def _by_delivery(book: Book) -> tuple[int, str]:
    return book.delivery_at, book.symbol


def _id_of(participant: Order | Block) -> str:
    return participant.order_id if isinstance(participant, Order) else participant.block_id
