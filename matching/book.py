"""A limit order book with price-time priority, in integer ticks.

Pure and deterministic: no I/O, no clock, no randomness. Each side keeps its price levels in a
dict (price -> level) plus a sorted list of prices; a level keeps its orders in arrival order in
a dict, so the oldest order is the first key and a cancel is O(1).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Literal

Side = Literal["buy", "sell"]


@dataclass(slots=True)
class RestingOrder:
    """An order waiting in the book."""

    order_id: str
    account_id: str
    side: Side
    price: int
    remaining: int


@dataclass(slots=True)
class Level:
    """All resting orders at one price, oldest first, and their total quantity."""

    price: int
    quantity: int = 0
    orders: dict[str, RestingOrder] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fill:
    """The incoming (taker) order traded against a resting (maker) order at the maker's price."""

    maker: RestingOrder
    price: int
    quantity: int


class BookSide:
    """One side of the book: levels keyed by price, best price first in `prices` order."""

    __slots__ = ("_descending", "levels", "prices")

    def __init__(self, descending: bool) -> None:
        self._descending = descending
        self.levels: dict[int, Level] = {}
        # Ascending list of keys; for bids the keys are negated prices, so index 0 is best.
        self.prices: list[int] = []

    def _key(self, price: int) -> int:
        return -price if self._descending else price

    def best(self) -> Level | None:
        """The level with the best price, if any."""
        if not self.prices:
            return None
        return self.levels[self._key(self.prices[0])]

    def add(self, order: RestingOrder) -> Level:
        """Append an order to the back of its price level."""
        level = self.levels.get(order.price)
        if level is None:
            level = Level(order.price)
            self.levels[order.price] = level
            insort(self.prices, self._key(order.price))
        level.orders[order.order_id] = order
        level.quantity += order.remaining
        return level

    def remove_level(self, price: int) -> None:
        """Drop an empty level."""
        del self.levels[price]
        key = self._key(price)
        del self.prices[bisect_left(self.prices, key)]

    def depth(self, limit: int | None = None) -> list[tuple[int, int]]:
        """(price, total quantity) per level, best first."""
        keys = self.prices if limit is None else self.prices[:limit]
        return [(level.price, level.quantity) for level in map(self._level_by_key, keys)]

    def _level_by_key(self, key: int) -> Level:
        return self.levels[self._key(key)]


class OrderBook:
    """The book of one contract."""

    __slots__ = ("asks", "bids", "orders", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide(descending=True)
        self.asks = BookSide(descending=False)
        self.orders: dict[str, RestingOrder] = {}

    def submit(
        self, order_id: str, account_id: str, side: Side, price: int, quantity: int
    ) -> tuple[list[Fill], RestingOrder | None]:
        """Match a limit order, then rest what remains; returns the fills and the resting order."""
        fills: list[Fill] = []
        remaining = quantity
        if side == "buy":
            opposite = self.asks
            while remaining:
                level = opposite.best()
                if level is None or level.price > price:
                    break
                remaining = self._take(level, opposite, remaining, fills)
        else:
            opposite = self.bids
            while remaining:
                level = opposite.best()
                if level is None or level.price < price:
                    break
                remaining = self._take(level, opposite, remaining, fills)
        if not remaining:
            return fills, None
        resting = RestingOrder(order_id, account_id, side, price, remaining)
        (self.bids if side == "buy" else self.asks).add(resting)
        self.orders[order_id] = resting
        return fills, resting

    def _take(self, level: Level, side: BookSide, remaining: int, fills: list[Fill]) -> int:
        orders = level.orders
        while remaining and orders:
            maker = next(iter(orders.values()))
            traded = min(remaining, maker.remaining)
            maker.remaining -= traded
            level.quantity -= traded
            remaining -= traded
            fills.append(Fill(maker, level.price, traded))
            if not maker.remaining:
                del orders[maker.order_id]
                del self.orders[maker.order_id]
        if not orders:
            side.remove_level(level.price)
        return remaining

    def cancel(self, order_id: str) -> RestingOrder | None:
        """Remove a resting order; None if it is not in the book."""
        order = self.orders.pop(order_id, None)
        if order is None:
            return None
        side = self.bids if order.side == "buy" else self.asks
        level = side.levels[order.price]
        del level.orders[order_id]
        level.quantity -= order.remaining
        if not level.orders:
            side.remove_level(order.price)
        return order

    def level_quantity(self, side: Side, price: int) -> int:
        """Total resting quantity at one price on one side (0 if none)."""
        level = (self.bids if side == "buy" else self.asks).levels.get(price)
        return 0 if level is None else level.quantity

    def best_bid(self) -> int | None:
        """Highest resting buy price."""
        level = self.bids.best()
        return None if level is None else level.price

    def best_ask(self) -> int | None:
        """Lowest resting sell price."""
        level = self.asks.best()
        return None if level is None else level.price
