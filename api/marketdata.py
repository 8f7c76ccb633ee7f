"""Live market data and outcomes, folded from the events topic for the API.

Keeps each contract's depth from BookChanged, its recent trades, and the outcome of every
command the API is waiting for; fans quotes and trades out to subscribers through bounded
queues, so a slow subscriber is dropped instead of slowing the exchange.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import (
    AnyEvent,
    BookChanged,
    CancelRejected,
    CapacityDeposited,
    DepositRejected,
    FundsDeposited,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    TradeExecuted,
    decode_event,
)
from exchange.log import CommandLog, TopicPartition
from exchange.pipeline import POLL_MAX_RECORDS, POLL_TIMEOUT_MS, Deduplicator, Topics

log = logging.getLogger(__name__)

RECENT_TRADES = 200
SUBSCRIBER_QUEUE = 1000


@dataclass
class ContractView:
    """What the market shows of one contract."""

    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    seq: int = 0
    trades: deque[TradeExecuted] = field(default_factory=lambda: deque(maxlen=RECENT_TRADES))

    def best_bid(self) -> tuple[int, int] | None:
        """(price, quantity) of the best bid."""
        if not self.bids:
            return None
        price = max(self.bids)
        return price, self.bids[price]

    def best_ask(self) -> tuple[int, int] | None:
        """(price, quantity) of the best ask."""
        if not self.asks:
            return None
        price = min(self.asks)
        return price, self.asks[price]

    def depth(self, levels: int) -> dict[str, list[list[int]]]:
        """Up to `levels` levels a side, best first."""
        bids = sorted(self.bids.items(), reverse=True)[:levels]
        asks = sorted(self.asks.items())[:levels]
        return {"bids": [list(b) for b in bids], "asks": [list(a) for a in asks]}


class Subscriber:
    """One stream client: the contracts it follows and its bounded outbox."""

    def __init__(self) -> None:
        self.symbols: set[str] = set()
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.dropped_reason: str | None = None


Outcome = (
    OrderAccepted
    | OrderRejected
    | OrderCancelled
    | CancelRejected
    | FundsDeposited
    | CapacityDeposited
    | DepositRejected
)


class MarketData:
    """Folds the events topic; answers book and quote queries; resolves waiting commands."""

    def __init__(self, command_log: CommandLog, topics: Topics, catalogue: Catalogue) -> None:
        self.log = command_log
        self.topics = topics
        self.views = {symbol: ContractView() for symbol in catalogue.symbols}
        self.subscribers: set[Subscriber] = set()
        self._waiters: dict[str, list[asyncio.Future[Outcome]]] = {}
        self._dedup = Deduplicator()
        self.trade_counts: dict[str, int] = {}
        self.trade_volumes: dict[str, int] = {}
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the events topic from its start until `stop` is set."""
        consumer = await self.log.consumer()
        partitions = [
            TopicPartition(self.topics.events, p) for p in range(self.topics.market_partitions)
        ]
        try:
            consumer.assign(partitions)
            for tp in partitions:
                consumer.seek(tp, 0)
            ends = {tp: await consumer.end_offset(tp) for tp in partitions}
            while not stop.is_set():
                records = await consumer.getmany(POLL_TIMEOUT_MS, POLL_MAX_RECORDS)
                for record in records:
                    try:
                        event = decode_event(record.value)
                    except ValidationError:
                        continue
                    self.apply(event, record.partition)
                if not self.ready.is_set():
                    positions = [await consumer.position(tp) for tp in partitions]
                    if all(p >= ends[tp] for p, tp in zip(positions, partitions, strict=True)):
                        self.ready.set()
        finally:
            await consumer.close()

    def apply(self, event: AnyEvent, read_from: int) -> None:
        """Fold one event read from partition `read_from` into the views; wake its waiters."""
        if isinstance(event, BookChanged | TradeExecuted):
            if not self._dedup.is_new(read_from, event.event_id):
                return
            view = self.views.get(event.symbol)
            if view is None:
                return
            if isinstance(event, BookChanged):
                self._apply_book(view, event)
            else:
                view.trades.append(event)
                self.trade_counts[event.symbol] = self.trade_counts.get(event.symbol, 0) + 1
                self.trade_volumes[event.symbol] = (
                    self.trade_volumes.get(event.symbol, 0) + event.quantity
                )
                self._publish(event.symbol, trade_message(event))
            return
        key = _outcome_key(event)
        if key is not None:
            for future in self._waiters.pop(key, ()):
                if not future.done():
                    future.set_result(event)  # type: ignore[arg-type]

    def _apply_book(self, view: ContractView, event: BookChanged) -> None:
        for side, changes in ((view.bids, event.bids), (view.asks, event.asks)):
            for price, quantity in changes:
                if quantity:
                    side[price] = quantity
                else:
                    side.pop(price, None)
        view.seq = event.seq
        self._publish(event.symbol, quote_message(event.symbol, view, event.ts))

    def expect(self, key: str) -> asyncio.Future[Outcome]:
        """A future for the outcome of the command with this order or deposit id.

        Register before sending the command, so the outcome cannot arrive unseen.
        """
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        return future

    def forget(self, key: str, future: asyncio.Future[Outcome]) -> None:
        """Stop waiting (after a timeout)."""
        waiting = self._waiters.get(key)
        if waiting and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._waiters[key]

    def subscribe(self, subscriber: Subscriber, symbols: Iterable[str]) -> list[str]:
        """Follow contracts; returns the symbols that are not listed (and were not added)."""
        unknown = [s for s in symbols if s not in self.views]
        for symbol in symbols:
            if symbol in self.views and symbol not in subscriber.symbols:
                subscriber.symbols.add(symbol)
                view = self.views[symbol]
                self._offer(subscriber, quote_message(symbol, view, None))
        self.subscribers.add(subscriber)
        return unknown

    def _publish(self, symbol: str, message: dict[str, Any]) -> None:
        for subscriber in list(self.subscribers):
            if symbol in subscriber.symbols:
                self._offer(subscriber, message)

    def _offer(self, subscriber: Subscriber, message: dict[str, Any]) -> None:
        try:
            subscriber.queue.put_nowait(message)
        except asyncio.QueueFull:
            subscriber.dropped_reason = f"too slow: outbox of {SUBSCRIBER_QUEUE} messages is full"
            self.subscribers.discard(subscriber)


def _outcome_key(event: AnyEvent) -> str | None:
    if isinstance(event, OrderAccepted | OrderRejected | OrderCancelled | CancelRejected):
        return event.order_id
    if isinstance(event, FundsDeposited | CapacityDeposited | DepositRejected):
        return event.deposit_id
    return None


def quote_message(symbol: str, view: ContractView, ts: int | None) -> dict[str, Any]:
    """Best bid and ask of a contract, as streamed."""
    bid = view.best_bid()
    ask = view.best_ask()
    return {
        "type": "quote",
        "symbol": symbol,
        "seq": view.seq,
        "bid": None if bid is None else {"price": bid[0], "quantity": bid[1]},
        "ask": None if ask is None else {"price": ask[0], "quantity": ask[1]},
        "ts": ts,
    }


def trade_message(trade: TradeExecuted) -> dict[str, Any]:
    """A trade, as streamed."""
    return {
        "type": "trade",
        "symbol": trade.symbol,
        "trade_id": trade.trade_id,
        "price": trade.price,
        "quantity": trade.quantity,
        "aggressor": trade.aggressor,
        "ts": trade.ts,
    }
