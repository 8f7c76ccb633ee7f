"""A deliberately straightforward order book, the yardstick of the matching benchmark.

What a Python programmer would write first: per contract a `SortedDict` of price levels, each a
`deque` of orders, and a dict of orders by id. It knows limit orders, cancels and taking
(IOC) only; other order types of the benchmark's flow are mapped onto those (see `submit`),
amend is cancel and replace, and the kill switch is ignored. Orders compare by identity
(`eq=False`), so removing one from a level is a pointer scan, not a field-by-field compare.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sortedcontainers import SortedDict

Fill = tuple[str, int, int]
"""(maker order id, price, quantity)."""


@dataclass(slots=True, eq=False)
class SimpleOrder:
    """A resting order."""

    order_id: str
    account: str
    side: str
    price: int
    quantity: int


class SimpleBook:
    """Price levels of deques in a sorted map; price-time priority."""

    def __init__(self) -> None:
        self.bids = SortedDict()
        self.asks = SortedDict()

    def take(self, side: str, price: int, quantity: int, fills: list[Fill]) -> int:
        """Trade against the opposite side up to `price`; returns the quantity left."""
        book = self.asks if side == "buy" else self.bids
        while quantity and book:
            best, level = book.peekitem(0 if side == "buy" else -1)
            if (best > price) if side == "buy" else (best < price):
                break
            while quantity and level:
                maker = level[0]
                traded = min(quantity, maker.quantity)
                maker.quantity -= traded
                quantity -= traded
                fills.append((maker.order_id, best, traded))
                if not maker.quantity:
                    level.popleft()
            if not level:
                del book[best]
        return quantity

    def rest(self, order: SimpleOrder) -> None:
        """Append an order to its price level."""
        book = self.bids if order.side == "buy" else self.asks
        level = book.get(order.price)
        if level is None:
            level = book[order.price] = deque()
        level.append(order)

    def remove(self, order: SimpleOrder) -> None:
        """Take a resting order out of its level."""
        book = self.bids if order.side == "buy" else self.asks
        level = book[order.price]
        level.remove(order)
        if not level:
            del book[order.price]


class SimpleExchange:
    """Books by symbol behind the same call signatures as `MatchingEngine`, for the benchmark."""

    def __init__(self, symbols: list[str]) -> None:
        self.books = {symbol: SimpleBook() for symbol in symbols}
        self.orders: dict[str, tuple[SimpleBook, SimpleOrder]] = {}

    def submit(
        self,
        ts: int,
        symbol: str,
        order_id: str,
        account: str,
        side: str,
        price: int,
        quantity: int,
        tif: str = "GTC",
        expire_at: int = 0,
        min_quantity: int = 0,
        all_or_none: bool = False,
        post_only: bool = False,
        stp_group: str = "",
        stp_mode: str = "",
        market: bool = False,
    ) -> list[Fill]:
        """A limit order; IOC, FOK and market orders only take (market: at `price`)."""
        book = self.books[symbol]
        fills: list[Fill] = []
        if market:
            price = price or (1 << 62 if side == "buy" else 0)
        left = book.take(side, price, quantity, fills)
        for maker_id, _, _ in fills:
            maker = self.orders.get(maker_id)
            if maker is not None and not maker[1].quantity:
                del self.orders[maker_id]
        if left and not market and tif not in ("IOC", "FOK"):
            order = SimpleOrder(order_id, account, side, price, left)
            book.rest(order)
            self.orders[order_id] = (book, order)
        return fills

    def cancel(self, ts: int, order_id: str, account: str | None = None) -> bool:
        """Cancel a resting order; False if it is not open."""
        entry = self.orders.pop(order_id, None)
        if entry is None:
            return False
        entry[0].remove(entry[1])
        return True

    def amend(
        self, ts: int, order_id: str, account: str | None, price: int = 0, quantity: int = 0
    ) -> list[Fill]:
        """Cancel and replace."""
        entry = self.orders.get(order_id)
        if entry is None:
            return []
        book, order = entry
        symbol = next(s for s, b in self.books.items() if b is book)
        self.cancel(ts, order_id)
        return self.submit(
            ts,
            symbol,
            order_id,
            order.account,
            order.side,
            price or order.price,
            quantity or order.quantity,
        )

    def cancel_all(self, ts: int, account: str) -> None:
        """Not supported: this book knows limit, cancel and take only (the flow has a few)."""
