"""The day-ahead auction stage: gathers every matching partition's bids for a day, solves the
day at once, and writes each partition's share of the result back to the orders topic.

    matching (every partition, at the gate) --DayAheadBidsCollected--> dayahead topic
    this stage, once all partitions' bids of a day are in: solve (matching/dayahead.py)
        --DayAheadCleared--> orders topic, each partition its share, applied in log order
        --DayAheadAuctionCompleted--> events topic (prices, welfare, bound, gap)

The stage reads one partition: an exclusive group may offer the same job in families of
different partitions, so the day is solved in one place, once every matching partition that
holds one of the catalogue's families has sent its bids of the day (or of a later day: a
partition that started past a day's gate trades that day continuously). Its state is the
bids gathered per day; a restarted stage replays its topic silently up to the committed
offset without solving again (the results it wrote are in the log), then live. The solver is
bounded by a node limit (deterministic) and a time limit (a safety): what it returns when it
stops early is recorded with its gap.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from exchange.domain.catalogue import Catalogue, SymbolError, family_of, parse_symbol
from exchange.domain.messages import (
    DayAheadAuctionCompleted,
    DayAheadBidsCollected,
    DayAheadCleared,
    EventStamp,
    decode,
)
from exchange.log import CommandLog, LogRecord
from exchange.pipeline import SNAPSHOT_EVERY, Deduplicator, StageRunner, Topics
from exchange.snapshots import SnapshotStore
from matching.snapshot import canonical_json

if TYPE_CHECKING:
    from matching.dayahead import DayAheadOrder, DayAheadResult

log = logging.getLogger(__name__)

NODE_LIMIT = 20_000
"""Branch-and-bound nodes the solver may explore: the bound that keeps it deterministic."""
TIME_LIMIT_S = 60.0
"""The solver's time limit, a safety under the node limit."""
DONE_KEPT = 400
"""Solved days remembered, so a partition's late duplicate bids never start a day again."""


@dataclass
class DayAheadBook:
    """The bids gathered per day, by partition, and the days already solved."""

    pending: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    """Per day, per partition: the orders it brought and its books of the day."""
    done: list[str] = field(default_factory=list)
    dedup: Deduplicator = field(default_factory=Deduplicator)
    latest: dict[int, str] = field(default_factory=dict)
    """The latest day each partition sent bids of: it sends days in order, so a day before
    it that it did not send (it started past that day's gate) it never will."""

    def complete(self, partitions: Iterable[int], gate_of: Callable[[str], int]) -> list[str]:
        """The pending auctions each of `partitions` has sent bids of or gone past, in the
        order of their gates (`gate_of` an auction's name: day-ahead and intraday auctions
        interleave)."""
        expected = set(partitions)

        def passed(partition: int, key: str) -> bool:
            latest = self.latest.get(partition)
            return latest is not None and gate_of(latest) > gate_of(key)

        return [
            key
            for key in sorted(self.pending, key=lambda k: (gate_of(k), k))
            if all(p in self.pending[key] or passed(p, key) for p in expected)
        ]

    def snapshot(self) -> dict[str, Any]:
        """The whole state, JSON-ready."""
        return {
            "pending": {
                day: {str(p): bids for p, bids in sorted(parts.items())}
                for day, parts in sorted(self.pending.items())
            },
            "done": list(self.done),
            "dedup": self.dedup.snapshot(),
            "latest": {str(p): day for p, day in sorted(self.latest.items())},
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> DayAheadBook:
        """The state a snapshot describes."""
        return cls(
            {
                day: {int(p): bids for p, bids in parts.items()}
                for day, parts in data["pending"].items()
            },
            list(data["done"]),
            Deduplicator.restore(data["dedup"]),
            {int(p): day for p, day in data["latest"].items()},
        )

    def state_hash(self) -> str:
        """SHA-256 of the canonical JSON of the state."""
        return hashlib.sha256(canonical_json(self.snapshot())).hexdigest()


def auction_orders(parts: dict[int, list[dict[str, Any]]]) -> list[DayAheadOrder]:
    """The orders of a day's auction from every partition's bids: partition by partition, each
    in its arrival order, numbered in that order (the auction's `seq`)."""
    # The solver needs scipy (the `sim` extra): imported only where an auction is run.
    from matching.dayahead import order_from_wire

    orders: list[DayAheadOrder] = []
    for partition in sorted(parts):
        for bid in sorted(parts[partition], key=lambda b: int(b["seq"])):
            orders.append(order_from_wire({**bid, "seq": len(orders)}))
    return orders


def tick_sizes(catalogue: Catalogue, orders: Iterable[DayAheadOrder]) -> dict[str, int]:
    """Each contract's tick size: the catalogue's, else its symbol's (a rolled or operator-listed
    contract), so the auction and every audit of it price on the same ticks whatever listings
    the auditor's settings name."""
    ticks = {}
    for order in orders:
        for symbol in order.symbols:
            spec = catalogue.get(symbol)
            if spec is None:
                try:
                    spec = parse_symbol(symbol)
                except SymbolError:
                    ticks[symbol] = 1
                    continue
            ticks[symbol] = spec.tick_size
    return ticks


class DayAheadRunner(StageRunner[DayAheadBook]):
    """Runs the day-ahead auction over the dayahead topic's one partition."""

    name = "dayahead"
    reads = "dayahead"

    def __init__(
        self,
        command_log: CommandLog,
        topics: Topics,
        catalogue: Catalogue,
        partitions: Iterable[int] | None = None,
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = SNAPSHOT_EVERY,
        node_limit: int = NODE_LIMIT,
        time_limit_s: float = TIME_LIMIT_S,
    ) -> None:
        super().__init__(command_log, topics, catalogue, partitions, snapshots, snapshot_every)
        self.node_limit = node_limit
        self.time_limit_s = time_limit_s
        families = {*catalogue.rolled_families, *(family_of(s) for s in catalogue.symbols)}
        self.bidders = sorted({topics.family_partition(f) for f in families})
        """The matching partitions that hold the catalogue's families: each sends its bids of
        every day (the others hold no books and see no records)."""

    def new_instance(self, partition: int) -> DayAheadBook:
        """Nothing gathered yet."""
        return DayAheadBook()

    def snapshot_instance(self, partition: int) -> Any:
        """The gathered bids and solved days, JSON-ready."""
        return self.instances[partition].snapshot()

    def restore_instance(self, data: Any) -> DayAheadBook:
        """The gathered bids and solved days of a snapshot."""
        return DayAheadBook.restore(data)

    def partition_hash(self, partition: int) -> str:
        """The state hash of the gathered bids."""
        return self.instances[partition].state_hash()

    def _process(self, records: list[LogRecord]) -> None:
        for record in records:
            book = self.instances[record.partition]
            try:
                message = decode(record.value)
            except ValidationError as error:
                log.error("dayahead: record %d is not a message: %s", record.offset, error)
                continue
            if not isinstance(message, DayAheadBidsCollected) or not book.dedup.is_new(
                record.partition, message.event_id
            ):
                continue
            day = message.day
            gate = self.catalogue.rules.auction_gate
            latest = book.latest.get(message.partition)
            if latest is None or gate(day) > gate(latest):
                book.latest[message.partition] = day
            if day not in book.done:
                book.pending.setdefault(day, {})[message.partition] = {
                    "orders": message.orders,
                    "symbols": message.symbols,
                }
            stamp = EventStamp(record.topic, record.partition, record.offset, record.timestamp_ms)
            for ready in book.complete(self.bidders, self.catalogue.rules.auction_gate):
                parts = book.pending.pop(ready)
                book.done = [*book.done, ready][-DONE_KEPT:]
                if self._live(record):
                    self._solve(ready, parts, stamp)

    def _solve(self, day: str, parts: dict[int, dict[str, Any]], stamp: EventStamp) -> None:
        """Clear the day and send each partition its share, then the day's summary."""
        from matching.dayahead import clear

        orders = auction_orders({p: brought["orders"] for p, brought in parts.items()})
        ticks = tick_sizes(self.catalogue, orders)
        started = time.perf_counter()
        result = clear(orders, ticks, node_limit=self.node_limit, time_limit_s=self.time_limit_s)
        solve_ms = round((time.perf_counter() - started) * 1000)
        log.info(
            "dayahead: %s cleared %d orders in %d ms: welfare %d, %s, gap %d ppm",
            day,
            len(orders),
            solve_ms,
            result.welfare,
            result.status,
            result.gap_ppm,
        )
        for partition in range(self.topics.market_partitions):
            self._send(
                self.topics.orders,
                partition,
                self._share(day, partition, parts.get(partition, {}), orders, result, stamp),
            )
        volumes: dict[str, int] = {}
        for trade in result.trades:
            volumes[trade.symbol] = volumes.get(trade.symbol, 0) + trade.quantity
        self._send(
            self.topics.events,
            0,
            DayAheadAuctionCompleted(
                event_id=stamp.next_id(),
                ts=stamp.ts,
                day=day,
                prices=dict(result.prices),
                volumes=dict(sorted(volumes.items())),
                welfare=result.welfare,
                bound=result.bound,
                gap_ppm=result.gap_ppm,
                status=result.status,
                orders=len(orders),
                accepted=len(result.accepted),
                solve_ms=solve_ms,
                partitions=sorted(parts),
            ),
        )

    def _share(
        self,
        day: str,
        partition: int,
        brought: dict[str, Any],
        orders: list[DayAheadOrder],
        result: DayAheadResult,
        stamp: EventStamp,
    ) -> DayAheadCleared:
        """What the result says about the orders a partition brought."""
        mine = {bid["order_id"] for bid in brought.get("orders", [])}
        books = brought.get("symbols", [])
        groups = sorted({o.group for o in orders if o.group is not None})
        return DayAheadCleared(
            event_id=stamp.next_id(),
            ts=stamp.ts,
            day=day,
            partition=partition,
            symbols=books,
            prices={s: p for s, p in result.prices.items() if s in books},
            trades=[
                (t.symbol, t.buy_order_id, t.sell_order_id, t.quantity, t.price)
                for t in result.trades
                if t.buy_order_id in mine
            ],
            accepted={o: q for o, q in result.accepted.items() if o in mine},
            rejected={o: str(r) for o, r in result.rejected.items() if o in mine},
            groups=groups,
        )
