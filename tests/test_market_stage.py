"""Unit tests of the matching stage through its public `handle(event, stamp)` API."""

from __future__ import annotations

import gc

from exchange.domain.catalogue import Catalogue, default_catalogue, parse_symbol
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    AmendRequested,
    BookChanged,
    CancelReason,
    CancelRejected,
    CancelRequested,
    Event,
    EventStamp,
    FundsDeposited,
    MarketControlRequested,
    OrderAccepted,
    OrderCancelled,
    RejectReason,
    Side,
    TradeExecuted,
)

SYM = "H100-80G.GZ.20271201T00"
OTHER = "CPU.GZ.20271201T00"


def accepted(
    order_id: str, account_id: str, side: Side, price: int, quantity: int, symbol: str = SYM
) -> OrderAccepted:
    return OrderAccepted(
        event_id=f"in:{order_id}",
        ts=0,
        order_id=order_id,
        account_id=account_id,
        symbol=symbol,
        side=side,
        price=price,
        quantity=quantity,
    )


def cancel(order_id: str, account_id: str, symbol: str = SYM) -> CancelRequested:
    return CancelRequested(
        event_id=f"in:x{order_id}", ts=0, order_id=order_id, account_id=account_id, symbol=symbol
    )


class Feed:
    """A market stage and the offsets of the records fed to it."""

    def __init__(self, stage: MarketStage | None = None) -> None:
        self.stage = stage or MarketStage(default_catalogue())
        self.offset = 0

    def send(self, event: Event) -> list[Event]:
        stamp = EventStamp("t", 0, self.offset, 5_000 + self.offset)
        self.offset += 1
        return self.stage.handle(event, stamp)


def trades(events: list[Event]) -> list[TradeExecuted]:
    return [e for e in events if isinstance(e, TradeExecuted)]


def book_changes(events: list[Event]) -> list[BookChanged]:
    return [e for e in events if isinstance(e, BookChanged)]


def test_resting_order_publishes_its_level() -> None:
    feed = Feed()

    events = feed.send(accepted("b1", "a1", "buy", 100, 2))

    assert events == [
        BookChanged(event_id="t:0:0:0", ts=5_000, symbol=SYM, seq=1, bids=[(100, 2)], asks=[])
    ]


def test_orders_at_one_price_add_to_the_level_total() -> None:
    feed = Feed()
    feed.send(accepted("b1", "a1", "buy", 100, 2))

    (changed,) = feed.send(accepted("b2", "a2", "buy", 100, 3))

    assert isinstance(changed, BookChanged)
    assert (changed.seq, changed.bids, changed.asks) == (2, [(100, 5)], [])


def test_same_price_asks_fill_oldest_first() -> None:
    feed = Feed()
    feed.send(accepted("s1", "p1", "sell", 100, 2))
    feed.send(accepted("s2", "p2", "sell", 100, 3))

    events = feed.send(accepted("b1", "a1", "buy", 100, 4))

    filled = trades(events)
    assert [(t.sell_order_id, t.seller_id, t.quantity) for t in filled] == [
        ("s1", "p1", 2),
        ("s2", "p2", 2),
    ]
    (changed,) = book_changes(events)
    assert (changed.bids, changed.asks) == ([], [(100, 1)])
    left = feed.send(cancel("s2", "p2"))[0]
    assert isinstance(left, OrderCancelled)
    assert left.remaining == 1


def test_time_priority_survives_a_partial_fill_of_the_oldest() -> None:
    feed = Feed()
    feed.send(accepted("s1", "p1", "sell", 100, 5))
    feed.send(accepted("s2", "p2", "sell", 100, 5))
    feed.send(accepted("b1", "a1", "buy", 100, 2))

    events = feed.send(accepted("b2", "a1", "buy", 100, 4))

    assert [(t.sell_order_id, t.quantity) for t in trades(events)] == [("s1", 3), ("s2", 1)]


def test_trade_is_at_the_makers_price_with_the_right_ids() -> None:
    feed = Feed()
    feed.send(accepted("s1", "p1", "sell", 100, 2))

    events = feed.send(accepted("b1", "a1", "buy", 110, 5))

    assert events == [
        TradeExecuted(
            event_id="t:0:1:0",
            ts=5_001,
            trade_id=f"{SYM}:1",
            symbol=SYM,
            price=100,
            quantity=2,
            buy_order_id="b1",
            sell_order_id="s1",
            buyer_id="a1",
            seller_id="p1",
            aggressor="buy",
        ),
        BookChanged(
            event_id="t:0:1:1", ts=5_001, symbol=SYM, seq=2, bids=[(110, 3)], asks=[(100, 0)]
        ),
    ]


def test_sell_aggressor_trades_at_the_resting_bid() -> None:
    feed = Feed()
    feed.send(accepted("b1", "a1", "buy", 120, 3))

    events = feed.send(accepted("s1", "p1", "sell", 100, 1))

    (trade,) = trades(events)
    assert (trade.price, trade.quantity, trade.aggressor) == (120, 1, "sell")
    assert (trade.buy_order_id, trade.buyer_id) == ("b1", "a1")
    assert (trade.sell_order_id, trade.seller_id) == ("s1", "p1")
    (changed,) = book_changes(events)
    assert (changed.bids, changed.asks) == ([(120, 2)], [])


def test_sweep_reports_every_touched_level_and_the_rest() -> None:
    feed = Feed()
    feed.send(accepted("s1", "p1", "sell", 100, 1))
    feed.send(accepted("s2", "p1", "sell", 105, 2))
    feed.send(accepted("s3", "p2", "sell", 105, 4))
    feed.send(accepted("s4", "p1", "sell", 110, 1))

    events = feed.send(accepted("b1", "a1", "buy", 105, 10))

    assert [(t.price, t.quantity, t.sell_order_id) for t in trades(events)] == [
        (100, 1, "s1"),
        (105, 2, "s2"),
        (105, 4, "s3"),
    ]
    (changed,) = book_changes(events)
    assert (changed.bids, changed.asks) == ([(105, 3)], [(100, 0), (105, 0)])
    assert [e.event_id for e in events] == [f"t:0:4:{n}" for n in range(4)]


def test_partial_fill_of_a_resting_order_leaves_its_remainder() -> None:
    feed = Feed()
    feed.send(accepted("s1", "p1", "sell", 100, 10))

    events = feed.send(accepted("b1", "a1", "buy", 100, 4))

    (trade,) = trades(events)
    assert trade.quantity == 4
    (changed,) = book_changes(events)
    assert (changed.bids, changed.asks) == ([], [(100, 6)])


def test_trade_ids_count_per_contract() -> None:
    feed = Feed()
    feed.send(accepted("s1", "p1", "sell", 100, 3))
    feed.send(accepted("s2", "p1", "sell", 7, 3, symbol=OTHER))

    ids = [
        t.trade_id
        for order in (
            accepted("b1", "a1", "buy", 100, 1),
            accepted("b2", "a1", "buy", 7, 1, symbol=OTHER),
            accepted("b3", "a1", "buy", 100, 2),
            accepted("b4", "a1", "buy", 7, 1, symbol=OTHER),
        )
        for t in trades(feed.send(order))
    ]

    assert ids == [f"{SYM}:1", f"{OTHER}:1", f"{SYM}:2", f"{OTHER}:2"]


def test_book_seq_counts_per_contract() -> None:
    feed = Feed()

    seqs = [
        (changed.symbol, changed.seq)
        for order in (
            accepted("b1", "a1", "buy", 100, 1),
            accepted("b2", "a1", "buy", 7, 1, symbol=OTHER),
            accepted("b3", "a1", "buy", 90, 1),
            accepted("s1", "p1", "sell", 100, 1),
        )
        for changed in book_changes(feed.send(order))
    ]

    assert seqs == [(SYM, 1), (OTHER, 1), (SYM, 2), (SYM, 3)]


def test_an_auction_publishes_the_levels_it_filled_in_part_and_in_full() -> None:
    feed = Feed(MarketStage(default_catalogue(), pre_open=True))
    feed.send(accepted("s1", "p1", "sell", 100, 5))
    feed.send(accepted("b1", "a1", "buy", 101, 2))
    auction = MarketControlRequested(
        event_id="in:auction", ts=0, operator_id="ops", action="schedule_auction", symbol=SYM
    )

    (changed,) = book_changes(feed.send(auction))

    assert (changed.bids, changed.asks) == ([(101, 0)], [(100, 3)])


def test_an_amend_down_in_place_publishes_its_level() -> None:
    feed = Feed()
    feed.send(accepted("b1", "a1", "buy", 100, 5))
    amend = AmendRequested(
        event_id="in:amend",
        ts=0,
        order_id="b1",
        account_id="a1",
        symbol=SYM,
        price=None,
        quantity=3,
        extra_hold=0,
    )

    (changed,) = book_changes(feed.send(amend))

    assert (changed.bids, changed.asks) == ([(100, 3)], [])


def test_cancel_of_a_resting_order_reports_its_remainder_and_level() -> None:
    feed = Feed()
    feed.send(accepted("b1", "a1", "buy", 100, 5))
    feed.send(accepted("b2", "a2", "buy", 100, 2))
    feed.send(accepted("s1", "p1", "sell", 100, 3))

    events = feed.send(cancel("b2", "a2"))

    assert events == [
        OrderCancelled(
            event_id="t:0:3:0",
            ts=5_003,
            order_id="b2",
            account_id="a2",
            symbol=SYM,
            side="buy",
            remaining=2,
            reason=CancelReason.REQUESTED,
        ),
        BookChanged(event_id="t:0:3:1", ts=5_003, symbol=SYM, seq=4, bids=[(100, 2)], asks=[]),
    ]
    last = feed.send(cancel("b1", "a1"))
    assert isinstance(last[0], OrderCancelled)
    assert last[0].remaining == 2
    assert isinstance(last[1], BookChanged)
    assert (last[1].bids, last[1].asks) == ([(100, 0)], [])


def test_cancel_of_an_unknown_order_is_rejected() -> None:
    feed = Feed()

    events = feed.send(cancel("zz", "a1"))

    assert events == [
        CancelRejected(
            event_id="t:0:0:0",
            ts=5_000,
            order_id="zz",
            account_id="a1",
            reason=RejectReason.ORDER_NOT_OPEN,
            message="order 'zz' is no longer open",
        )
    ]


def test_cancel_of_a_filled_or_cancelled_order_is_rejected() -> None:
    feed = Feed()
    feed.send(accepted("s1", "p1", "sell", 100, 1))
    feed.send(accepted("s2", "p1", "sell", 100, 1))
    feed.send(accepted("b1", "a1", "buy", 100, 1))
    feed.send(cancel("s2", "p1"))

    for order_id in ("s1", "s2", "b1"):
        (rejected,) = feed.send(cancel(order_id, "p1"))
        assert isinstance(rejected, CancelRejected)
        assert rejected.reason == RejectReason.ORDER_NOT_OPEN


def test_order_for_a_contract_not_listed_here_is_cancelled() -> None:
    stage = MarketStage(Catalogue([parse_symbol(SYM)]))
    feed = Feed(stage)

    events = feed.send(accepted("b1", "a1", "buy", 7, 4, symbol=OTHER))

    assert events == [
        OrderCancelled(
            event_id="t:0:0:0",
            ts=5_000,
            order_id="b1",
            account_id="a1",
            symbol=OTHER,
            side="buy",
            remaining=4,
            reason=CancelReason.CONTRACT_NOT_TRADING,
        )
    ]
    (rejected,) = feed.send(cancel("b1", "a1", symbol=OTHER))
    assert isinstance(rejected, CancelRejected)
    assert rejected.reason == RejectReason.ORDER_NOT_OPEN


def test_other_events_cause_nothing() -> None:
    feed = Feed()

    assert (
        feed.send(
            FundsDeposited(
                event_id="e", ts=0, deposit_id="d", account_id="a", amount=1, currency="CNY"
            )
        )
        == []
    )


def test_a_snapshot_and_a_restore_leave_the_collector_as_they_found_it() -> None:
    # They pause it while they build (market.collector_paused), and only while they build.
    stage = MarketStage(default_catalogue())
    assert gc.isenabled()
    data = stage.snapshot()
    restored = MarketStage.restore(default_catalogue(), data)
    assert gc.isenabled()
    assert restored.state_hash() == stage.state_hash()
    gc.disable()
    try:
        assert MarketStage.restore(default_catalogue(), restored.snapshot()).snapshot() == data
        assert not gc.isenabled(), "a collector someone paused stays paused"
    finally:
        gc.enable()
