"""The reason an account reads for a day-ahead order that got nothing: the solver's, stored in
the auction's result, except that a bid the solver could only call `no_clearing_price` (one of
its hours got no price) reads `out_of_the_money` when the hours that did clear already price it
out. The stored result keeps the solver's word, so replaying a stored history sees what it saw."""

from __future__ import annotations

import asyncio
from typing import Any

from api.dayahead import results_document
from exchange.domain.catalogue import MarketRules, default_catalogue
from exchange.domain.messages import (
    AnyEvent,
    DayAheadAuctionCompleted,
    DayAheadBidsCollected,
    DayAheadCleared,
)
from matching.dayahead import DayAheadOrder, Rejection, clear, order_to_wire

DATE = "2027-12-02"
A, C = "H100-80G.GZ.20271202T00", "H100-80G.GZ.20271202T01"
FAMILY = "H100-80G.GZ.20271202"
CATALOGUE = default_catalogue(MarketRules(day_ahead_gate_ms=12 * 3_600_000))


class StoredAuction:
    """The ledger's two reads results_document makes, over one auction's stored events."""

    def __init__(self, events: list[AnyEvent], symbols: dict[str, str]) -> None:
        self.events = events
        self.symbols = symbols

    async def day_ahead_events(self, day: str, types: tuple[str, ...]) -> list[AnyEvent]:
        assert day == DATE
        return [event for event in self.events if event.type in types]

    async def account_order_symbols(self, account_id: str, order_ids: set[str]) -> dict[str, str]:
        return {o: s for o, s in self.symbols.items() if o in order_ids}


def _results(orders: list[DayAheadOrder], symbols: dict[str, str]) -> dict[str, Any]:
    """Clear `orders`, store the result as the auction stage does (one partition), and read
    the account's results back."""
    result = clear(orders)
    books = sorted({s for o in orders for s in o.symbols})
    events: list[AnyEvent] = [
        DayAheadBidsCollected(
            event_id="e-1", ts=1, day=DATE, partition=0,
            orders=[order_to_wire(o) for o in orders], symbols=books,
        ),
        DayAheadCleared(
            event_id="e-2", ts=2, day=DATE, partition=0, symbols=books,
            prices=dict(result.prices),
            trades=[(t.symbol, t.buy_order_id, t.sell_order_id, t.quantity, t.price)
                    for t in result.trades],
            accepted=dict(result.accepted),
            rejected={o: str(r) for o, r in result.rejected.items()},
        ),
        DayAheadAuctionCompleted(
            event_id="e-3", ts=3, day=DATE, prices=dict(result.prices), volumes={},
            welfare=result.welfare, bound=result.bound, gap_ppm=result.gap_ppm,
            status=result.status, orders=len(orders), accepted=len(result.accepted),
            solve_ms=0, partitions=[0],
        ),
    ]  # fmt: skip
    ledger = StoredAuction(events, symbols)
    return asyncio.run(results_document(ledger, CATALOGUE, DATE, "lab", now_ms=10**13))  # type: ignore[arg-type]


def _reasons(document: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {o["order_id"]: (o["status"], o["reason"]) for o in document["orders"]}


def test_a_block_bid_the_hours_that_cleared_price_out_reads_out_of_the_money() -> None:
    orders = [
        DayAheadOrder("bA", "buy", (A,), 100, 5, 1),
        DayAheadOrder("sA", "sell", (A,), 60, 5, 2),
        # Hour C has only an offer: nothing bounds its price, so it gets none.
        DayAheadOrder("sC", "sell", (C,), 50, 1, 3),
        # 30 a hour over A and C: A alone cleared at 80, more than the 60 of both hours.
        DayAheadOrder("cheap", "buy", (A, C), 30, 1, 4),
        # 50 a hour: A's 80 leaves 20 for C, whose price nobody knows.
        DayAheadOrder("maybe", "buy", (A, C), 50, 1, 5),
    ]
    assert clear(orders).prices == {A: 80}
    # The solver's word, as the result stores it, is the same for all three.
    assert clear(orders).rejected == dict.fromkeys(
        ("cheap", "maybe", "sC"), Rejection.NO_CLEARING_PRICE
    )
    document = _results(orders, {"cheap": FAMILY, "maybe": FAMILY, "sC": C, "bA": A})
    assert document["status"] == "cleared"
    assert _reasons(document) == {
        "bA": ("accepted", None),
        "sC": ("resting", "no_clearing_price"),
        "cheap": ("rejected", "out_of_the_money"),
        "maybe": ("rejected", "no_clearing_price"),
    }


def test_an_hourly_bid_below_the_clearing_price_or_an_offer_above_it_is_out_of_the_money() -> None:
    orders = [
        DayAheadOrder("b1", "buy", (A,), 100, 5, 1),
        DayAheadOrder("s1", "sell", (A,), 60, 5, 2),
        DayAheadOrder("low", "buy", (A,), 50, 2, 3),
        DayAheadOrder("high", "sell", (A,), 120, 2, 4),
        # Hour C has bids only for a block's offer: no price there.
        DayAheadOrder("bC", "buy", (C,), 40, 1, 5),
        DayAheadOrder("blk", "sell", (A, C), 90, 1, 6),
    ]
    document = _results(orders, {o.order_id: o.symbols[0] for o in orders} | {"blk": FAMILY})
    assert _reasons(document) == {
        "b1": ("accepted", None),
        "s1": ("accepted", None),
        "low": ("resting", "out_of_the_money"),
        "high": ("resting", "out_of_the_money"),
        "bC": ("resting", "no_clearing_price"),
        "blk": ("rejected", "no_clearing_price"),
    }


def test_with_no_price_anywhere_every_reason_stays_no_clearing_price() -> None:
    orders = [
        DayAheadOrder("aon", "buy", (A,), 100, 10, 1, group="g"),
        DayAheadOrder("s", "sell", (A,), 50, 6, 2),
    ]
    # A member of an exclusive group is a block in its book, under its family.
    document = _results(orders, {"aon": FAMILY, "s": A})
    assert _reasons(document) == {
        "aon": ("rejected", "no_clearing_price"),
        "s": ("resting", "no_clearing_price"),
    }
