"""What the agents see of the market: the public books and their own orders and obligations.

An agent of a real exchange learns this from the API's streams, which fold the events topic;
the simulation folds the same topic itself, so agents act only on what the exchange published
(never on the stages' memory) and the run stays a function of the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exchange.domain.accounts import Grant
from exchange.domain.messages import (
    BlockAccepted,
    BookChanged,
    DeliveryObligation,
    GrantApproved,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    TradeExecuted,
    decode_event,
)
from exchange.log import CommandLog, LogConsumer, TopicPartition
from exchange.pipeline import Deduplicator, Topics


@dataclass
class OrderState:
    """One of an agent's orders as the events tell it."""

    quantity: int
    filled: int = 0
    paid: int = 0
    """Sum of price x quantity of its trades."""
    price: int = 0
    remaining: int = 0
    open: bool = True
    rejected: str = ""


@dataclass
class Book:
    """Aggregate levels of one contract: price -> quantity."""

    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)

    def ask_levels(self) -> list[tuple[int, int]]:
        """Ask levels, best (lowest) first."""
        return sorted(self.asks.items())


class MarketView:
    """Folds every partition of the events topic from its start."""

    def __init__(self, command_log: CommandLog, topics: Topics) -> None:
        self._log = command_log
        self._topics = topics
        self._consumer: LogConsumer | None = None
        self._partitions = [
            TopicPartition(topics.events, p) for p in range(topics.market_partitions)
        ]
        self._dedup = Deduplicator()
        self.books: dict[str, Book] = {}
        self.orders: dict[str, OrderState] = {}
        self.obligations: list[DeliveryObligation] = []
        """Every obligation announced so far, in the order read."""
        self.grants: dict[str, str] = {}
        """Account -> the voucher programme that granted it funds."""
        self.grant_terms: dict[str, Grant] = {}
        """Account -> its grant's rules and limit as approved (what it used is not followed:
        the risk stage decides each reservation)."""
        self.last_price: dict[str, int] = {}
        """Family -> price of its latest trade."""

    async def catch_up(self) -> None:
        """Read every event appended so far."""
        if self._consumer is None:
            self._consumer = await self._log.consumer()
            self._consumer.assign(self._partitions)
            for tp in self._partitions:
                self._consumer.seek(tp, 0)
        consumer = self._consumer
        while True:
            behind = False
            for tp in self._partitions:
                if await consumer.position(tp) < await consumer.end_offset(tp):
                    behind = True
            if not behind:
                return
            for record in await consumer.getmany(0, 5000):
                event = decode_event(record.value)
                if self._dedup.is_new(record.partition, event.event_id):
                    self._apply(event)

    def _apply(self, event: object) -> None:
        if isinstance(event, BookChanged):
            book = self.books.setdefault(event.symbol, Book())
            for side, levels in ((book.bids, event.bids), (book.asks, event.asks)):
                for price, quantity in levels:
                    if quantity:
                        side[price] = quantity
                    else:
                        side.pop(price, None)
        elif isinstance(event, OrderAccepted):
            self.orders[event.order_id] = OrderState(
                event.quantity, price=event.price, remaining=event.quantity
            )
        elif isinstance(event, BlockAccepted):
            total = event.quantity * len(event.symbols)
            self.orders[event.order_id] = OrderState(total, price=event.price, remaining=total)
        elif isinstance(event, OrderRejected):
            self.orders[event.order_id] = OrderState(
                event.quantity, open=False, rejected=event.reason.value
            )
        elif isinstance(event, TradeExecuted):
            self.last_price[event.symbol.rsplit(".", 1)[0]] = event.price
            for order_id in (event.buy_order_id, event.sell_order_id):
                state = self.orders.get(order_id)
                if state is not None:
                    state.filled += event.quantity
                    state.paid += event.price * event.quantity
                    state.remaining -= event.quantity
                    state.open = state.remaining > 0
        elif isinstance(event, OrderCancelled):
            state = self.orders.get(event.order_id)
            if state is not None:
                state.open = False
                state.remaining = event.remaining
        elif isinstance(event, OrderAmended):
            state = self.orders.get(event.order_id)
            if state is not None:
                state.price = event.price
                state.remaining = event.remaining
                state.open = event.remaining > 0
        elif isinstance(event, DeliveryObligation):
            self.obligations.append(event)
        elif isinstance(event, GrantApproved):
            self.grants[event.account_id] = event.programme_id
            self.grant_terms[event.account_id] = Grant(
                event.programme_id, event.account_id, event.limit, event.limit, event.rate_bps,
                event.cap_per_contract, list(event.classes), list(event.regions),
                event.valid_from, event.valid_until, list(event.related_accounts),
            )  # fmt: skip

    def asks(self, symbol: str) -> list[tuple[int, int]]:
        """The ask levels of a contract, best first (none if it has no book yet)."""
        book = self.books.get(symbol)
        return [] if book is None else book.ask_levels()

    async def close(self) -> None:
        """Release the consumer."""
        if self._consumer is not None:
            await self._consumer.close()
