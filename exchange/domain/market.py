"""The matching stage: turns risk-approved orders and cancels into trades and book changes.

Pure and deterministic, a function of the orders topic alone. The books themselves live in
`matching`; this module maps between them and the exchange's events.
"""

from __future__ import annotations

import hashlib
from typing import Any

from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import (
    BookChanged,
    CancelReason,
    CancelRejected,
    CancelRequested,
    Event,
    EventStamp,
    OrderAccepted,
    OrderCancelled,
    RejectReason,
    Side,
    TradeExecuted,
)
from matching.book import OrderBook


class MarketStage:
    """The books of every listed contract in this stage's partitions."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.books = {symbol: OrderBook(symbol) for symbol in catalogue.symbols}
        self._book_seq = dict.fromkeys(self.books, 0)
        self._trade_seq = dict.fromkeys(self.books, 0)

    def handle(self, event: Event, stamp: EventStamp) -> list[Event]:
        """The events an approved order or cancel causes, after the input itself."""
        if isinstance(event, OrderAccepted):
            return self._place(event, stamp)
        if isinstance(event, CancelRequested):
            return self._cancel(event, stamp)
        return []

    def _place(self, order: OrderAccepted, stamp: EventStamp) -> list[Event]:
        book = self.books.get(order.symbol)
        if book is None:
            return [self._cancelled(order, order.quantity, stamp)]
        fills, resting = book.submit(
            order.order_id, order.account_id, order.side, order.price, order.quantity
        )
        events: list[Event] = []
        touched: set[int] = set()
        for fill in fills:
            self._trade_seq[book.symbol] += 1
            maker = fill.maker
            buy_is_maker = maker.side == "buy"
            events.append(
                TradeExecuted(
                    event_id=stamp.next_id(),
                    ts=stamp.ts,
                    trade_id=f"{book.symbol}:{self._trade_seq[book.symbol]}",
                    symbol=book.symbol,
                    price=fill.price,
                    quantity=fill.quantity,
                    buy_order_id=maker.order_id if buy_is_maker else order.order_id,
                    sell_order_id=order.order_id if buy_is_maker else maker.order_id,
                    buyer_id=maker.account_id if buy_is_maker else order.account_id,
                    seller_id=order.account_id if buy_is_maker else maker.account_id,
                    aggressor=order.side,
                )
            )
            touched.add(fill.price)
        maker_side: Side = "sell" if order.side == "buy" else "buy"
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        maker_changes = asks if maker_side == "sell" else bids
        for price in sorted(touched):
            maker_changes.append((price, book.level_quantity(maker_side, price)))
        if resting is not None:
            own = bids if order.side == "buy" else asks
            own.append((order.price, book.level_quantity(order.side, order.price)))
        if bids or asks:
            events.append(self._book_changed(book.symbol, bids, asks, stamp))
        return events

    def _cancel(self, request: CancelRequested, stamp: EventStamp) -> list[Event]:
        book = self.books.get(request.symbol)
        resting = None if book is None else book.cancel(request.order_id)
        if book is None or resting is None:
            return [
                CancelRejected(
                    event_id=stamp.next_id(),
                    ts=stamp.ts,
                    order_id=request.order_id,
                    account_id=request.account_id,
                    reason=RejectReason.ORDER_NOT_OPEN,
                    message=f"order {request.order_id!r} is no longer open",
                )
            ]
        cancelled = OrderCancelled(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=resting.order_id,
            account_id=resting.account_id,
            symbol=book.symbol,
            side=resting.side,
            remaining=resting.remaining,
            reason=CancelReason.REQUESTED,
        )
        level = (resting.price, book.level_quantity(resting.side, resting.price))
        bids = [level] if resting.side == "buy" else []
        asks = [] if resting.side == "buy" else [level]
        return [cancelled, self._book_changed(book.symbol, bids, asks, stamp)]

    def _cancelled(self, order: OrderAccepted, remaining: int, stamp: EventStamp) -> OrderCancelled:
        return OrderCancelled(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            order_id=order.order_id,
            account_id=order.account_id,
            symbol=order.symbol,
            side=order.side,
            remaining=remaining,
            reason=CancelReason.CONTRACT_NOT_TRADING,
        )

    def _book_changed(
        self,
        symbol: str,
        bids: list[tuple[int, int]],
        asks: list[tuple[int, int]],
        stamp: EventStamp,
    ) -> BookChanged:
        self._book_seq[symbol] += 1
        return BookChanged(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            symbol=symbol,
            seq=self._book_seq[symbol],
            bids=bids,
            asks=asks,
        )

    def state_hash(self) -> str:
        """SHA-256 of every book (orders in priority order) and sequence counter."""
        hasher = hashlib.sha256()
        for symbol in sorted(self.books):
            book = self.books[symbol]
            hasher.update(
                f"b|{symbol}|{self._book_seq[symbol]}|{self._trade_seq[symbol]}\n".encode()
            )
            for side in (book.bids, book.asks):
                for price, _ in side.depth():
                    for o in side.levels[price].orders.values():
                        hasher.update(
                            f"o|{o.order_id}|{o.account_id}|{o.side}|{o.price}|{o.remaining}\n".encode()
                        )
        return hasher.hexdigest()

    def snapshot(self) -> dict[str, Any]:
        """Every book (resting orders in priority order) and counter, JSON-ready."""
        books = {}
        for symbol in sorted(self.books):
            book = self.books[symbol]
            books[symbol] = {
                "book_seq": self._book_seq[symbol],
                "trade_seq": self._trade_seq[symbol],
                "orders": [
                    [o.order_id, o.account_id, o.side, o.price, o.remaining]
                    for side in (book.bids, book.asks)
                    for price, _ in side.depth()
                    for o in side.levels[price].orders.values()
                ],
            }
        return {"books": books}

    @classmethod
    def restore(cls, catalogue: Catalogue, data: dict[str, Any]) -> MarketStage:
        """The stage a snapshot describes."""
        stage = cls(catalogue)
        for symbol, saved in data["books"].items():
            book = stage.books[symbol]
            for order_id, account_id, side, price, remaining in saved["orders"]:
                fills, _ = book.submit(order_id, account_id, side, price, remaining)
                assert not fills, f"snapshot of {symbol} is crossed at order {order_id}"
            stage._book_seq[symbol] = saved["book_seq"]
            stage._trade_seq[symbol] = saved["trade_seq"]
        return stage
