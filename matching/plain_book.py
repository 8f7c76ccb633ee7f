"""The plain book: the fastest order book a competent engineer writes first, in plain Python.

The yardstick of `cx bench matching`'s plain-book flows (`matching/plain_bench.py`): one
contract, limit orders that match then rest their remainder, immediate-or-cancel orders, and
cancels. Each side is a `sortedcontainers.SortedList` of its prices and a dict of price ->
`deque` of orders, oldest first; a dict of order id -> order finds an order to cancel. Nothing
else: no accounts, no self-trade prevention, no bands, no expiry, no events. Trades are counted
and their quantities summed, so a run can be checked against the engine's.

Cancels are lazy: a cancelled order is marked dead (its quantity set to 0) and stays in its
deque until it reaches the front. Every operation leaves a live order at the front of every
level (dead ones reaching the front are dropped at once), so a level is empty exactly when its
deque is, and an empty level leaves the book there and then.

An order is a list, the cheapest mutable record to build: [quantity, order id, price, is_buy].
The best bid and ask are kept in attributes (0 and `NO_ASK` when a side is empty), so an order
that does not cross costs one comparison: indexing a `SortedList` is a call in Python, and with
the attributes the book ran 1.3-1.5 times as fast on the touch flow as indexing it on every
order (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections import deque

from sortedcontainers import SortedList

Order = list[int]
"""[quantity (0: cancelled), order id, price, 1 if a buy else 0]."""

NO_ASK = 1 << 62
"""The best ask of a book without asks: above any price."""


class PlainBook:
    """One contract's bids and asks, price-time priority, lazy cancels."""

    __slots__ = (
        "ask_prices",
        "asks",
        "best_ask",
        "best_bid",
        "bid_prices",
        "bids",
        "orders",
        "traded",
        "trades",
    )

    def __init__(self) -> None:
        self.bid_prices = SortedList()
        """Prices with resting bids, ascending: the best bid is the last."""
        self.ask_prices = SortedList()
        """Prices with resting asks, ascending: the best ask is the first."""
        self.bids: dict[int, deque[Order]] = {}
        self.asks: dict[int, deque[Order]] = {}
        self.best_bid = 0
        self.best_ask = NO_ASK
        self.orders: dict[int, Order] = {}
        """Resting orders by id: filled and cancelled ones leave it at once."""
        self.trades = 0
        self.traded = 0
        """The quantity of all trades."""

    def limit(self, order_id: int, buy: bool, price: int, quantity: int) -> None:
        """A limit order: trade what crosses, rest the remainder."""
        if buy:
            if price >= self.best_ask:
                quantity = self._buy(price, quantity)
                if not quantity:
                    return
            order = [quantity, order_id, price, 1]
            level = self.bids.get(price)
            if level is None:
                self.bids[price] = deque((order,))
                self.bid_prices.add(price)
                if price > self.best_bid:
                    self.best_bid = price
            else:
                level.append(order)
        else:
            if price <= self.best_bid:
                quantity = self._sell(price, quantity)
                if not quantity:
                    return
            order = [quantity, order_id, price, 0]
            level = self.asks.get(price)
            if level is None:
                self.asks[price] = deque((order,))
                self.ask_prices.add(price)
                if price < self.best_ask:
                    self.best_ask = price
            else:
                level.append(order)
        self.orders[order_id] = order

    def take(self, buy: bool, price: int, quantity: int) -> None:
        """An immediate-or-cancel order: trade what crosses, drop the remainder."""
        if buy:
            if price >= self.best_ask:
                self._buy(price, quantity)
        elif price <= self.best_bid:
            self._sell(price, quantity)

    def cancel(self, order_id: int) -> bool:
        """Cancel a resting order; False if it is not resting."""
        order = self.orders.pop(order_id, None)
        if order is None:
            return False
        order[0] = 0
        price = order[2]
        levels = self.bids if order[3] else self.asks
        level = levels[price]
        if level[0] is order:
            level.popleft()
            while level and not level[0][0]:
                level.popleft()
            if not level:
                del levels[price]
                if order[3]:
                    self.bid_prices.remove(price)
                    if price == self.best_bid:
                        self.best_bid = self.bid_prices[-1] if levels else 0
                else:
                    self.ask_prices.remove(price)
                    if price == self.best_ask:
                        self.best_ask = self.ask_prices[0] if levels else NO_ASK
        return True

    def _buy(self, price: int, quantity: int) -> int:
        """Take asks up to `price` (at least the best ask); returns the quantity left."""
        ask_prices = self.ask_prices
        asks = self.asks
        orders = self.orders
        best = self.best_ask
        trades = traded = 0
        while True:
            level = asks[best]
            while quantity:
                maker = level[0]
                size = maker[0]
                trades += 1
                if size > quantity:
                    maker[0] = size - quantity
                    traded += quantity
                    quantity = 0
                    break
                traded += size
                quantity -= size
                del orders[maker[1]]
                level.popleft()
                while level and not level[0][0]:
                    level.popleft()
                if not level:
                    del asks[best]
                    ask_prices.pop(0)
                    best = ask_prices[0] if asks else NO_ASK
                    break
            if not quantity or best > price:
                break
        self.best_ask = best
        self.trades += trades
        self.traded += traded
        return quantity

    def _sell(self, price: int, quantity: int) -> int:
        """Take bids down to `price` (at most the best bid); returns the quantity left."""
        bid_prices = self.bid_prices
        bids = self.bids
        orders = self.orders
        best = self.best_bid
        trades = traded = 0
        while True:
            level = bids[best]
            while quantity:
                maker = level[0]
                size = maker[0]
                trades += 1
                if size > quantity:
                    maker[0] = size - quantity
                    traded += quantity
                    quantity = 0
                    break
                traded += size
                quantity -= size
                del orders[maker[1]]
                level.popleft()
                while level and not level[0][0]:
                    level.popleft()
                if not level:
                    del bids[best]
                    bid_prices.pop()
                    best = bid_prices[-1] if bids else 0
                    break
            if not quantity or best < price:
                break
        self.best_bid = best
        self.trades += trades
        self.traded += traded
        return quantity
