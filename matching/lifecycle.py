"""The contract lifecycle and the engine's clock: listing, timers, halts, closure, delivery.

`listed` -> pre-open (orders collected, nothing matches) -> opening call auction (at the
listing's `open_at`, at a scheduled family auction, or when an operator resumes it) ->
continuous trading (with halts and reopening auctions) -> gate closure at `close_at` (resting
orders and waiting blocks expire) -> delivery. A contract listed `continuous` skips pre-open.

Time is the log time `ts` (ms) each command carries; it advances only when a command arrives
(a scheduler that wants expiries or auctions to happen on time appends a clock record, see
`advance`). Timed work that falls due at or before `ts` (order expiry, reopening and scheduled
auctions, gate closure, delivery) runs before the command itself, in the order
(time, kind: expiry < reopening < auction < gate closure < delivery, then the name of the order,
contract or family). The timers sit in one heap; a command compares its time with the earliest
deadline only (`MatchingEngine.submit` and `cancel` inline that comparison).

`Lifecycle` adds these methods to the engine's state and its call auctions
(`matching/state.py` says why the engine is built from one class per concern).
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heappop

from matching.auction import CallAuctions
from matching.book import INFINITY, Book, Order
from matching.outputs import (
    CLOSED,
    CONTINUOUS,
    DELIVERED,
    EXPIRED,
    HALTED,
    OPERATOR_REJECTED,
    PRE_OPEN,
    STATE,
    RefusalReason,
    StateReason,
)
from matching.state import (
    TIMER_AUCTION,
    TIMER_CLOSE,
    TIMER_DELIVER,
    TIMER_EXPIRE,
    TIMER_REOPEN,
)


class Lifecycle(CallAuctions):
    """Listing, the clock and its timers, operators' controls, gate closure and delivery."""

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
            self._push_timer(open_at, TIMER_AUCTION, family, (symbol,))
        self._push_timer(close, TIMER_CLOSE, symbol, symbol)
        self._push_timer(delivery_at, TIMER_DELIVER, symbol, symbol)
        self.advance(self.now)

    def schedule_auction(self, ts: int, family: str, at: int, symbols: Sequence[str]) -> None:
        """Run one call auction at `at` over those of `symbols` still in pre-open, with blocks.
        Refused unless every one collects orders in pre-open now, outside any other auction:
        the auction would take nothing of the others."""
        self.advance(ts)
        for symbol in symbols:
            book = self.books.get(symbol)
            if book is None or book.family != family:
                refusal = RefusalReason.UNKNOWN_CONTRACT
            elif symbol in self.session_books or symbol in self.day_ahead_books:
                refusal = RefusalReason.IN_AUCTION
            elif book.state != PRE_OPEN:
                refusal = RefusalReason.NOT_PRE_OPEN
            else:
                continue
            self.events.append((OPERATOR_REJECTED, symbol, "schedule", refusal))
            return
        self._push_timer(max(at, self.now), TIMER_AUCTION, family, tuple(symbols))
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

    def _run_timers(self, ts: int) -> None:
        timers = self._timers
        while timers and timers[0][0] <= ts:
            at, kind, _, _, payload = heappop(timers)
            if at > self.now:
                self.now = at
            if kind == TIMER_EXPIRE:
                order: Order = payload[0]
                if order.order_id in self.in_auction:
                    # An auction is deciding on it: it expires once the result is applied.
                    self._push_timer(ts + 1, kind, order.order_id, payload)
                elif self.orders.get(order.order_id) is order:
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
            elif kind == TIMER_REOPEN:
                # A delisted book is delivered: its reopening and auctions no longer apply.
                halted = self.books.get(payload)
                if halted is not None and halted.state == HALTED and halted.reopen_at == at:
                    self._auction([halted])
            elif kind == TIMER_AUCTION:
                books = [self.books.get(s) for s in payload]
                # A book an operator halted in pre-open misses this auction: resumed, it opens
                # through one of its own.
                for symbol in payload:
                    if symbol in self.halted_pre_open:
                        self.halted_pre_open[symbol] = False
                self._auction(
                    [
                        b
                        for b in books
                        if b is not None
                        and b.state == PRE_OPEN
                        and b.symbol not in self.session_books
                    ]
                )
            elif kind == TIMER_CLOSE:
                self._close(self.books[payload])
            else:
                book = self.books[payload]
                if book.state == CLOSED:
                    book.state = DELIVERED
                    self.events.append((STATE, book.symbol, DELIVERED, StateReason.DELIVERY))
        self._deadline = timers[0][0] if timers else INFINITY

    def delist(self, symbol: str) -> None:
        """Forget the book of a delivered contract: nothing can happen to it any more, and a
        market that lists new hours every day must not keep every past one in memory."""
        book = self.books.get(symbol)
        if book is not None and book.state == DELIVERED:
            del self.books[symbol]

    def halt(self, ts: int, symbol: str) -> None:
        """Halt a contract until an operator resumes it: one trading continuously stops, one in
        pre-open is kept out of its auction (refused `in_auction` once that auction has
        taken its orders)."""
        self.advance(ts)
        book = self.books.get(symbol)
        if book is None:
            self.events.append((OPERATOR_REJECTED, symbol, "halt", RefusalReason.UNKNOWN_CONTRACT))
        elif symbol in self.session_books or symbol in self.day_ahead_books:
            self.events.append((OPERATOR_REJECTED, symbol, "halt", RefusalReason.IN_AUCTION))
        elif book.state == PRE_OPEN:
            self.halted_pre_open[symbol] = True
            self._halt(book, StateReason.OPERATOR)
        elif book.state != CONTINUOUS:
            self.events.append((OPERATOR_REJECTED, symbol, "halt", RefusalReason.NOT_CONTINUOUS))
        else:
            self._halt(book, StateReason.OPERATOR)

    def resume(self, ts: int, symbol: str, open_pre_open: bool = True) -> None:
        """End an operator's halt: a contract halted in pre-open before its auction collects
        orders for it again (pre-open); any other halted one opens (or reopens) through a call
        auction now. `open_pre_open` lets a resume also open a contract in pre-open through a call
        auction; without it that is refused `not_halted` (its auction opens it)."""
        self.advance(ts)
        book = self.books.get(symbol)
        if book is None:
            self.events.append(
                (OPERATOR_REJECTED, symbol, "resume", RefusalReason.UNKNOWN_CONTRACT)
            )
        elif symbol in self.session_books or symbol in self.day_ahead_books:
            self.events.append((OPERATOR_REJECTED, symbol, "resume", RefusalReason.IN_AUCTION))
        elif book.state == HALTED and self.halted_pre_open.get(symbol, False):
            del self.halted_pre_open[symbol]
            book.state = PRE_OPEN
            self.events.append((STATE, symbol, PRE_OPEN, StateReason.RESUMED))
        elif book.state == HALTED or (book.state == PRE_OPEN and open_pre_open):
            if self.halted_pre_open.pop(symbol, None) is not None:
                # Halted before it ever opened, and its auction passed: this one opens it.
                book.state = PRE_OPEN
            self._auction([book])
        else:
            self.events.append((OPERATOR_REJECTED, symbol, "resume", RefusalReason.NOT_HALTED))

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
