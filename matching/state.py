"""The state every part of the matching engine works on, and the primitives that keep it whole.

`MatchingEngine` (`matching/engine.py`) is one class built from one class per concern, each in
a module named for it and each deriving from the one before it here:

- `state.py`, `EngineState`: the books, the order and account indexes, waiting blocks, timers
  and outputs; resting and removing an order, dropping a block, halting; queries;
- `snapshot.py`, `Snapshots`: snapshot, restore, state hash;
- `continuous.py`, `ContinuousMatching`: matching an incoming order (price-time priority,
  all-or-none, self-trade prevention, the price band, dry runs);
- `auction.py`, `CallAuctions`: call auctions (clearing price, allocation, blocks accepted or
  rejected whole);
- `lifecycle.py`, `Lifecycle`: time and timers, listing, halts and reopenings, gate closure,
  delivery, operators' controls;
- `engine.py`, `MatchingEngine`: order entry (submit, the hot path; cancel, amend, the kill
  switch, block orders).

One chain, because mypyc compiles these modules (`matching/__init__.py`) and a compiled class
has a single base. Each class calls only methods of those before it, so mypy checks every call,
and the modules import in one direction only (no cycle). Inheritance, not helper objects the
engine would hold: the hot path reads `self.orders`, `self.events`, `self.books` and calls
`self._match` for nearly every command, and on one object each of those is a single lookup
that CPython specialises and caches by the class's version wherever in the hierarchy the method
is defined, as fast as when the engine was one class (compiled, a read at a fixed offset and a
direct call). A helper (`self.matcher.match(...)`, `helper.engine.events`) would add an
attribute read to every such call and a reference back. The names the hot path reads as
globals (`BUY`, `TRADE`, `Order`, ...) are imported by name into the module that reads them,
so each stays one cached global lookup too.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from heapq import heappush
from typing import Any, Final

from matching.book import (
    BUY,
    CST_DAY_OFFSET_MS,
    INFINITY,
    AccountOrders,
    Block,
    Book,
    Level,
    Order,
    OrderIndex,
    by_seq,
    side_orders,
)
from matching.outputs import (
    CANCELLED,
    CLOSED,
    DELIVERED,
    EXPIRED,
    HALTED,
    STATE,
    CancelReason,
    Output,
    StateReason,
)
from matching.outputs import Side as OrderSide

# Timer kinds, in the order they run when due at the same time.
TIMER_EXPIRE: Final = 0
TIMER_REOPEN: Final = 1
TIMER_AUCTION: Final = 2
TIMER_CLOSE: Final = 3
TIMER_DELIVER: Final = 4


class EngineState:
    """Every book of the contracts it was given, their schedules, and the events they caused."""

    def __init__(self, halt_ms: int = 60_000, day_offset_ms: int = CST_DAY_OFFSET_MS) -> None:
        self.halt_ms = halt_ms
        self.day_offset_ms = day_offset_ms
        self.books: dict[str, Book] = {}
        self.orders = OrderIndex()
        self.by_account: dict[str, AccountOrders] = {}
        self.blocks: dict[str, Block] = {}
        self.block_symbols: dict[str, tuple[str, ...]] = {}
        self.in_auction: set[str] = set()
        """Orders and blocks collected for the day-ahead auction, awaiting its result: they
        can be neither cancelled nor amended until it is applied."""
        self.exclusive: set[str] = set()
        """Waiting blocks that are alternatives of an exclusive group: only a day-ahead or
        intraday auction decides them (a call auction of their books leaves them waiting)."""
        self.session_books: set[str] = set()
        """Books taken out of continuous trading for an intraday auction, awaiting its
        result: they collect orders as in pre-open and reopen with the result."""
        self.day_ahead_books: set[str] = set()
        """Pre-open books collected for a day-ahead auction, awaiting its result: an operator
        can neither halt nor resume them until it is applied."""
        self.halted_pre_open: dict[str, bool] = {}
        """Books an operator halted in pre-open (they never opened), kept out of every auction
        while halted, and whether their auction is still to come (a day-ahead one whose gate
        has not passed, a scheduled one not yet due): if so a resume puts them back in
        pre-open to collect orders for it, else it opens them through a call auction."""
        self.close_after_session: dict[str, bool] = {}
        """Books of `session_books` whose gate closure (False) or delisting (True) fell due
        during the auction: they close when its result is applied, not before."""
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

    def _push_timer(self, at: int, kind: int, key: str, payload: Any) -> None:
        self._timer_seq += 1
        heappush(self._timers, (at, kind, key, self._timer_seq, payload))
        if at < self._deadline:
            self._deadline = at

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
        owner = self.by_account.get(account)
        if owner is None:
            owner = self.by_account[account] = AccountOrders()
        book_side = book.bids if side == BUY else book.asks
        level = book_side.levels.get(price)
        if level is None:
            level = book_side.levels[price] = Level(price)
            insort(book_side.keys, book_side.sign * price)
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
            level,
            owner,
            aon,
            post_only,
        )
        level.add(order)
        if aon:
            level.aon += 1
        else:
            book_side.before.setdefault(price, level.quantity)
            level.quantity += quantity
        self.orders.add(order_id, order)
        owner.add(order)
        return order

    def _remove(self, order: Order) -> None:
        """Take an order out of its book and the indexes (no event)."""
        self._unlist(order)
        self.orders.remove(order.order_id)

    def _unlist(self, order: Order) -> None:
        """Take an order out of its book and its account's list, not the index by id (its
        caller has popped it from there already)."""
        book = order.book
        book_side = book.bids if order.side == BUY else book.asks
        price = order.price
        level = order.level
        # Its account's list stays when it empties: most accounts come back.
        order.owner.discard(order)
        if order.aon:
            level.aon -= 1
        else:
            book_side.before.setdefault(price, level.quantity)
            level.quantity -= order.remaining
        level.remove(order)
        if not level.count:
            del book_side.levels[price]
            keys = book_side.keys
            del keys[bisect_left(keys, book_side.sign * price)]

    def _drop_block(self, block: Block, reason: CancelReason, expired: bool = False) -> None:
        """Take a waiting block away, reported as cancelled (or expired)."""
        del self.blocks[block.block_id]
        self.exclusive.discard(block.block_id)
        symbols = self.block_symbols.pop(block.block_id)
        total = block.quantity * len(symbols)
        family, block_id, account, side = block.family, block.block_id, block.account, block.side
        if expired:
            self.events.append((EXPIRED, family, block_id, account, side, total, reason))
        else:
            self.events.append((CANCELLED, family, block_id, account, side, total, reason))

    def _close(self, book: Book, delisted: bool = False) -> None:
        """Expire a contract's resting orders and waiting blocks and close it: at its gate
        closure, or delisted by an operator before it."""
        if book.state == CLOSED or book.state == DELIVERED:
            return
        if book.symbol in self.session_books:
            # Its orders are in an intraday auction: it closes when the result is applied.
            self.close_after_session[book.symbol] = delisted
            return
        if delisted:
            expiry, why = CancelReason.DELISTED, StateReason.DELISTED
        else:
            expiry, why = CancelReason.GATE_CLOSURE, StateReason.GATE_CLOSURE
        resting = [o for side in (book.bids, book.asks) for o in side_orders(side)]
        resting.sort(key=by_seq)
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
        for block in sorted(waiting, key=by_seq):
            self._drop_block(block, expiry, expired=True)
        book.state = CLOSED
        self.halted_pre_open.pop(book.symbol, None)
        self.events.append((STATE, book.symbol, CLOSED, why))

    def _halt(self, book: Book, reason: StateReason) -> None:
        book.state = HALTED
        self.events.append((STATE, book.symbol, HALTED, reason))
        if reason is StateReason.PRICE_BAND:
            book.reopen_at = self.now + self.halt_ms
            self._push_timer(book.reopen_at, TIMER_REOPEN, book.symbol, book.symbol)
        else:
            book.reopen_at = 0

    # Queries.

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
        return list(side_orders(book.bids)), list(side_orders(book.asks))
