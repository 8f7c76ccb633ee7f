"""A replay that holds every matching partition's books in one state (settlement's, `cx
replay`) freezes each partition's bids where its stored collection says and carries out each
partition's share of a day-ahead result on that partition's books only, as the partition did."""

from __future__ import annotations

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
    DayAheadBidsCollected,
    DayAheadCleared,
    Event,
    EventStamp,
    OrderAccepted,
    TradeExecuted,
)
from matching.book import PRE_OPEN

FAMILIES = ("H100-80G.GZ", "CPU.GZ")
DAY = "2027-12-01"
GATE = (
    cst_day_start_ms(to_utc_ms(parse_symbol("H100-80G.GZ.20271201T00").delivery_start))
    - 12 * HOUR_MS
)


def _inputs(family: str, ts: int) -> list[Event]:
    """Two sells and a buy block over the family's two night hours of the day."""
    hours = [f"{family}.20271201T00", f"{family}.20271201T01"]
    sells: list[Event] = [
        OrderAccepted(
            event_id=f"in:{family}:s{n}",
            ts=ts,
            order_id=f"{family}:s{n}",
            account_id="p",
            symbol=symbol,
            side="sell",
            price=100,
            quantity=2,
        )
        for n, symbol in enumerate(hours)
    ]
    block = BlockAccepted(
        event_id=f"in:{family}:b", ts=ts, order_id=f"{family}:b", account_id="b",
        symbol=hours[0], family=family, symbols=hours, side="buy", price=150, quantity=2,
    )  # fmt: skip
    return [*sells, block]


def _cleared(family: str, collected: DayAheadBidsCollected, ts: int) -> DayAheadCleared:
    hours = [f"{family}.20271201T00", f"{family}.20271201T01"]
    return DayAheadCleared(
        event_id=f"dayahead:{family}",
        ts=ts,
        day=DAY,
        partition=collected.partition,
        symbols=collected.symbols,
        prices=dict.fromkeys(hours, 100),
        trades=[(s, f"{family}:b", f"{family}:s{n}", 2, 100) for n, s in enumerate(hours)],
        accepted={f"{family}:b": 2, f"{family}:s0": 2, f"{family}:s1": 2},
        rejected={},
    )


def test_a_replay_of_every_partition_opens_each_partitions_books_with_its_own_result() -> None:
    catalogue = default_catalogue(MarketRules(day_ahead_gate_ms=12 * HOUR_MS))
    recorded: dict[str, list[Event]] = {}
    live_trades = 0
    for partition, family in enumerate(FAMILIES):
        stage = MarketStage(catalogue.subset(lambda f, family=family: f == family))
        recorded[family] = []
        for offset, event in enumerate(_inputs(family, GATE - HOUR_MS)):
            stage.handle(event, EventStamp("orders", partition, offset, event.ts))
            recorded[family].append(stage.recorded(event, max(event.ts, stage.engine.now)))
        # The partition's first record past the gate (a tick) collects its bids.
        (collected,) = [
            e for e in stage.idle(EventStamp("orders", partition, 10, GATE + 1))
            if isinstance(e, DayAheadBidsCollected)
        ]  # fmt: skip
        collected = collected.model_copy(update={"partition": partition})
        assert len(collected.orders) == 3
        recorded[family].append(collected)
        cleared = _cleared(family, collected, GATE + 2)
        outputs = stage.handle(cleared, EventStamp("orders", partition, 11, cleared.ts))
        live_trades += sum(isinstance(o, TradeExecuted) for o in outputs)
        recorded[family].append(stage.recorded(cleared, max(cleared.ts, stage.engine.now)))
    assert live_trades == 4

    # The store interleaves partitions: both partitions' orders, bids, then both results.
    replay = MarketStage(catalogue, replica=True)
    stored = [
        *recorded[FAMILIES[0]][:-2],
        *recorded[FAMILIES[1]][:-2],
        recorded[FAMILIES[0]][-2],
        recorded[FAMILIES[1]][-2],
        recorded[FAMILIES[0]][-1],
        recorded[FAMILIES[1]][-1],
    ]
    for position, event in enumerate(stored):
        replay.replay(event, EventStamp("replay", 0, position, event.ts))

    # Each block traded as its partition's result says, none in another partition's opening.
    books = [b for b in replay.engine.books.values() if b.family in FAMILIES]
    assert len(books) == 4
    assert not replay.engine.blocks
    assert all(book.state != PRE_OPEN for book in books)
    assert [book.trades for book in books] == [1, 1, 1, 1]
