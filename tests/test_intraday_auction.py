"""Intraday auctions in one matching partition: at each one, the books trading continuously
(those whose gate closure is far enough off) leave continuous trading with their resting
orders and the exclusive groups waiting for it, frozen until the result, which trades, drops
what it did not accept and reopens the books; a gate closure or an expiry falling due
meanwhile waits for the result; a group an auction decided never competes again; a replica
fed the recorded events ends in the same state."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cx.settings import Settings
from exchange.domain.catalogue import (
    HOUR_MS,
    MarketRules,
    cst_day_start_ms,
    default_catalogue,
    parse_symbol,
    to_utc_ms,
)
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    BlockAccepted,
    CancelRejected,
    CancelRequested,
    ContractStateChanged,
    DayAheadBidsCollected,
    DayAheadCleared,
    Event,
    EventStamp,
    MarketControlRejected,
    MarketControlRequested,
    OrderAccepted,
    OrderCancelled,
    TradeExecuted,
)
from matching.outputs import CLOSED, CONTINUOUS, PRE_OPEN

FAMILY = "H100-80G.GZ"
T0, T1 = f"{FAMILY}.20271201T00", f"{FAMILY}.20271201T01"
DAY = "2027-12-01"
MIDNIGHT = cst_day_start_ms(to_utc_ms(parse_symbol(T0).delivery_start))
GATE = MIDNIGHT - 12 * HOUR_MS
"""The day-ahead gate: 12:00 CST the day before."""
RULES = MarketRules(
    day_ahead_gate_ms=12 * HOUR_MS, intraday_every_ms=HOUR_MS, gate_closure_ms=HOUR_MS
)


class Partition:
    """A matching partition of one family fed by hand, recording what its events topic
    would hold (the inputs as recorded, then their outputs)."""

    def __init__(self) -> None:
        catalogue = default_catalogue(RULES)
        self.catalogue = catalogue.subset(lambda family: family == FAMILY)
        self.stage = MarketStage(self.catalogue)
        self.stored: list[Event] = []
        self.offset = 0

    def feed(self, event: Event) -> list[Event]:
        stamp = EventStamp("orders", 0, self.offset, event.ts)
        self.offset += 1
        outputs = self.stage.handle(event, stamp)
        self.stored.append(self.stage.recorded(event, max(event.ts, self.stage.engine.now)))
        self.stored += outputs
        return outputs

    def tick(self, ts: int) -> list[Event]:
        outputs = self.stage.idle(EventStamp("orders", 0, self.offset, ts))
        self.offset += 1
        self.stored += outputs
        return outputs

    def state(self, symbol: str) -> str:
        return self.stage.engine.books[symbol].state


def _sell(order_id: str, symbol: str, ts: int, price: int = 100, **extra: object) -> Event:
    return OrderAccepted(
        event_id=f"in:{order_id}", ts=ts, order_id=order_id, account_id="p", symbol=symbol,
        side="sell", price=price, quantity=2, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def _buy(order_id: str, symbol: str, ts: int, price: int) -> Event:
    return OrderAccepted(
        event_id=f"in:{order_id}", ts=ts, order_id=order_id, account_id="b", symbol=symbol,
        side="buy", price=price, quantity=1,
    )  # fmt: skip


def _alternative(block_id: str, group: str, ts: int) -> Event:
    return BlockAccepted(
        event_id=f"in:{block_id}", ts=ts, order_id=block_id, account_id="b", symbol=T0,
        family=FAMILY, symbols=[T0, T1], side="buy", price=150, quantity=2, group=group,
    )  # fmt: skip


def _open_after_day_ahead(partition: Partition) -> None:
    """Two asks before the day-ahead gate, an empty day-ahead result: the books open."""
    partition.feed(_sell("s0", T0, GATE - HOUR_MS))
    partition.feed(_sell("s1", T1, GATE - HOUR_MS))
    # The day-ahead auction and, at the same time, an intraday one (with nothing open yet).
    collections = [e for e in partition.tick(GATE + 1) if isinstance(e, DayAheadBidsCollected)]
    assert [(c.day, len(c.orders)) for c in collections] == [(DAY, 2), ("2027-11-30T12:00", 0)]
    collected = collections[0]
    partition.feed(
        DayAheadCleared(
            event_id="da", ts=GATE + 2, day=DAY, partition=0, symbols=collected.symbols,
            prices={}, trades=[], accepted={}, rejected={},
        )
    )  # fmt: skip
    assert partition.state(T0) == partition.state(T1) == CONTINUOUS


def _replica_agrees(partition: Partition) -> None:
    replica = MarketStage(partition.catalogue, replica=True)
    for position, event in enumerate(partition.stored):
        replica.replay(event, EventStamp("replay", 0, position, event.ts))
    assert replica.engine.state_hash() == partition.stage.engine.state_hash()


def test_an_intraday_auction_freezes_the_open_books_and_reopens_them_with_its_result() -> None:
    partition = Partition()
    _open_after_day_ahead(partition)
    # A need's alternative in continuous trading waits for the auction: the asks at 100 would
    # fill it at once, but only an auction decides between a group's alternatives.
    assert partition.feed(_alternative("b:1", "g", GATE + 10)) == []
    assert "b:1" in partition.stage.engine.blocks
    partition.feed(_buy("low", T0, GATE + 11, price=90))

    session = GATE + HOUR_MS
    outputs = partition.tick(session + 5)
    states = [(e.symbol, e.state, e.reason) for e in outputs if isinstance(e, ContractStateChanged)]
    assert states == [(T0, PRE_OPEN, "intraday_auction"), (T1, PRE_OPEN, "intraday_auction")]
    (collected,) = [e for e in outputs if isinstance(e, DayAheadBidsCollected)]
    assert collected.day == "2027-11-30T13:00"
    assert sorted(b["order_id"] for b in collected.orders) == ["b:1", "low", "s0", "s1"]
    assert next(b for b in collected.orders if b["order_id"] == "b:1")["group"] == "g"

    # Meanwhile: a crossing bid rests without trading, a collected order cannot be cancelled,
    # an operator cannot reopen the book.
    crossing = partition.feed(_buy("late", T0, session + 10, price=120))
    assert not [e for e in crossing if isinstance(e, TradeExecuted)]
    refused = partition.feed(
        CancelRequested(event_id="c", ts=session + 11, order_id="s0", account_id="p", symbol=T0)
    )
    assert [e.reason for e in refused if isinstance(e, CancelRejected)] == ["in_auction"]
    resume = MarketControlRequested(
        event_id="r", ts=session + 12, operator_id="ops", action="resume", symbol=T0
    )
    assert [type(e) for e in partition.feed(resume)] == [MarketControlRejected]
    assert partition.state(T0) == PRE_OPEN

    result = DayAheadCleared(
        event_id="id", ts=session + 20, day=collected.day, partition=0,
        symbols=collected.symbols, prices={T0: 100, T1: 100},
        trades=[(T0, "b:1", "s0", 2, 100), (T1, "b:1", "s1", 2, 100)],
        accepted={"b:1": 2, "s0": 2, "s1": 2}, rejected={"low": "out_of_the_money"},
        groups=["g"],
    )  # fmt: skip
    outputs = partition.feed(result)
    assert [(t.symbol, t.price, t.quantity) for t in outputs if isinstance(t, TradeExecuted)] == [
        (T0, 100, 2),
        (T1, 100, 2),
    ]
    reopened = [(e.symbol, e.state) for e in outputs if isinstance(e, ContractStateChanged)]
    assert reopened == [(T0, CONTINUOUS), (T1, CONTINUOUS)]
    engine = partition.stage.engine
    assert not engine.in_auction
    assert not engine.session_books
    assert not engine.blocks
    # The bids the auction left rest again, cancellable.
    assert sorted(engine.orders) == ["late", "low"]
    _replica_agrees(partition)


def test_a_gate_closure_or_an_expiry_during_an_intraday_auction_waits_for_its_result() -> None:
    partition = Partition()
    _open_after_day_ahead(partition)
    session = MIDNIGHT - 2 * HOUR_MS
    """22:00: T0 closes at 23:00, 45 minutes past the guard; T1 at midnight."""
    # The auctions from 13:00 to 21:00 run at the first record after them: the first takes
    # the books out of continuous trading, the others find none open; all clear empty.
    quiet = [e for e in partition.tick(session - 120_000) if isinstance(e, DayAheadBidsCollected)]
    assert [len(c.symbols) for c in quiet] == [2] + [0] * 8
    for n, collected in enumerate(quiet):
        partition.feed(
            DayAheadCleared(
                event_id=f"q{n}", ts=session - 110_000, day=collected.day, partition=0,
                symbols=collected.symbols, prices={}, trades=[], accepted={},
                rejected={o["order_id"]: "out_of_the_money" for o in collected.orders},
            )
        )  # fmt: skip
    assert partition.state(T0) == CONTINUOUS
    partition.feed(_sell("gtd", T1, session - 60_000, price=110, time_in_force="GTD",
                         expire_at=session + 30 * 60_000))  # fmt: skip
    (collected,) = [e for e in partition.tick(session) if isinstance(e, DayAheadBidsCollected)]
    assert sorted(collected.symbols) == [T0, T1]
    # The result is late: T0's gate closure and the GTD expiry fall due before it (and the
    # 23:00 auction finds no book open).
    meanwhile = partition.tick(MIDNIGHT - HOUR_MS + 60_000)
    assert [(type(e), e.symbols) for e in meanwhile] == [(DayAheadBidsCollected, [])]
    assert partition.state(T0) == PRE_OPEN
    assert "gtd" in partition.stage.engine.orders
    outputs = partition.feed(
        DayAheadCleared(
            event_id="late", ts=MIDNIGHT - HOUR_MS + 120_000, day=collected.day, partition=0,
            symbols=collected.symbols, prices={}, trades=[], accepted={},
            rejected={"s0": "out_of_the_money", "s1": "out_of_the_money",
                      "gtd": "out_of_the_money"},
        )
    )  # fmt: skip
    closed = [(e.symbol, e.state) for e in outputs if isinstance(e, ContractStateChanged)]
    assert (T0, CLOSED) in closed
    assert (T1, CONTINUOUS) in closed
    cancelled = {e.order_id: e.reason for e in outputs if isinstance(e, OrderCancelled)}
    assert cancelled["s0"] == "gate_closure"
    # The expiry runs at the next log time, once the order is out of the auction.
    later = partition.tick(MIDNIGHT - HOUR_MS + 180_000)
    assert [(e.order_id, e.reason) for e in later if isinstance(e, OrderCancelled)] == [
        ("gtd", "good_till_date")
    ]
    _replica_agrees(partition)


def test_an_alternative_that_missed_the_auction_deciding_its_group_is_cancelled() -> None:
    partition = Partition()
    _open_after_day_ahead(partition)
    session = GATE + HOUR_MS
    (collected,) = [e for e in partition.tick(session + 5) if isinstance(e, DayAheadBidsCollected)]
    # Another partition's alternative of group g was in the auction; this one reached its
    # book just after the gate here.
    partition.feed(_alternative("g:2", "g", session + 6))
    outputs = partition.feed(
        DayAheadCleared(
            event_id="id", ts=session + 20, day=collected.day, partition=0,
            symbols=collected.symbols, prices={}, trades=[], accepted={},
            rejected={"s0": "out_of_the_money", "s1": "out_of_the_money"}, groups=["g"],
        )
    )  # fmt: skip
    assert [(e.order_id, e.reason) for e in outputs if isinstance(e, OrderCancelled)] == [
        ("g:2", "block_not_accepted")
    ]
    assert "g:2" not in partition.stage.engine.blocks
    _replica_agrees(partition)


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"CX_INTRADAY_AUCTION_HOURS": 5, "CX_DAY_AHEAD_GATE": "12:00"}, "must divide 24, not 5"),
        ({"CX_INTRADAY_AUCTION_HOURS": 4}, "needs CX_DAY_AHEAD_GATE"),
    ],
)
def test_settings_refuse_intraday_auctions_off_the_clock_or_without_a_day_ahead_one(
    values: dict[str, object], error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        Settings(**values)  # type: ignore[arg-type]


def test_settings_schedule_intraday_auctions_every_n_hours_from_midnight_cst() -> None:
    rules = Settings(CX_INTRADAY_AUCTION_HOURS=4, CX_DAY_AHEAD_GATE="12:00").market_rules()
    assert rules.intraday_every_ms == 4 * HOUR_MS
    assert rules.intraday_auction_after(GATE) == GATE + 4 * HOUR_MS
    assert rules.intraday_auction_after(MIDNIGHT - 1) == MIDNIGHT
    assert rules.auction_gate("2027-11-30T16:00") == GATE + 4 * HOUR_MS
    assert rules.auction_gate(DAY) == GATE
