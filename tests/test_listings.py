"""Rolling listings on the log clock: the risk stage's time-aware lookups, the matching stage's
lazily listed books, their snapshots, and the settings that configure them."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from pydantic import ValidationError

from cx.settings import Settings
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    Catalogue,
    ListingRule,
    MarketRules,
    default_catalogue,
    to_utc_ms,
)
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    BlockAccepted,
    CapacityDeposited,
    ContractStateChanged,
    ControlMarket,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    Event,
    EventStamp,
    MarketControlRejected,
    MarketControlRequested,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    PlaceBlockOrder,
    PlaceOrder,
    RejectReason,
    TradeExecuted,
    encode,
)
from exchange.domain.risk import RiskStage
from exchange.pipeline import MatchingRunner, Topics

HOUR = 3_600_000
DAY = 24 * HOUR
# 10:00 CST on Thursday 26 November 2026.
NOW = to_utc_ms(datetime(2026, 11, 26, 10, tzinfo=CHINA_STANDARD_TIME))
MIDNIGHT = to_utc_ms(datetime(2026, 11, 27, tzinfo=CHINA_STANDARD_TIME))
FAMILIES = ("H100-80G.GZ", "H100-80G-INT.GZ", "TOK-QWEN.YRD")
TODAY_NOON = "H100-80G.GZ.20261126T12"
LAST_LISTED = "H100-80G.GZ.20261127T23"
NEXT_DAY = "H100-80G.GZ.20261128T00"
GONE = "H100-80G.GZ.20261126T11"


def catalogue(pre_open: bool = False) -> Catalogue:
    """One day ahead, gate closure one hour before delivery."""
    return default_catalogue(MarketRules(pre_open=pre_open), [ListingRule(FAMILIES, 1)])


class RiskFeed:
    def __init__(self) -> None:
        self.stage = RiskStage(catalogue())
        self.offset = 0

    def send(self, command: object, at: int = NOW) -> Event:
        stamp = EventStamp("cx.commands", 0, self.offset, at)
        self.offset += 1
        return self.stage.handle(command, stamp)  # type: ignore[arg-type]


def order(symbol: str, order_id: str = "o-1", side: str = "buy", price: int = 1000) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id, account_id="acct", symbol=symbol, side=side, price=price, quantity=1
    )


def test_risk_accepts_an_order_for_a_rolled_contract_listed_at_the_command_time() -> None:
    feed = RiskFeed()
    feed.send(DepositFunds(deposit_id="d", account_id="acct", amount=10_000))

    assert isinstance(feed.send(order(TODAY_NOON)), OrderAccepted)
    assert isinstance(feed.send(order("TOK-QWEN.YRD.20261127T23", "o-2", price=1)), OrderAccepted)


@pytest.mark.parametrize(
    ("symbol", "at", "message"),
    [
        (
            NEXT_DAY,
            NOW,
            f"contract {NEXT_DAY!r} is not yet listed: it lists at 2026-11-27T00:00:00+08:00",
        ),
        (
            GONE,
            NOW,
            f"contract {GONE!r} is retired: its trading closed at 2026-11-26T10:00:00+08:00",
        ),
        ("A100-80G.NMG.20261126T20", NOW, "contract 'A100-80G.NMG.20261126T20' is not listed"),
    ],
    ids=["not-yet-listed", "retired", "no-rule"],
)
def test_risk_rejects_a_contract_outside_its_listing_saying_why(
    symbol: str, at: int, message: str
) -> None:
    feed = RiskFeed()
    feed.send(DepositFunds(deposit_id="d", account_id="acct", amount=10_000))

    placed = feed.send(order(symbol), at)
    deposited = feed.send(
        DepositCapacity(deposit_id="c", account_id="acct", symbol=symbol, quantity=1), at
    )
    controlled = feed.send(ControlMarket(operator_id="op", action="tick", symbol=symbol), at)

    assert isinstance(placed, OrderRejected)
    assert (placed.reason, placed.message) == (RejectReason.UNKNOWN_CONTRACT, message)
    assert isinstance(deposited, DepositRejected)
    assert (deposited.reason, deposited.message) == (RejectReason.UNKNOWN_CONTRACT, message)
    assert isinstance(controlled, MarketControlRejected)
    assert (controlled.reason, controlled.message) == (RejectReason.UNKNOWN_CONTRACT, message)


def test_the_next_day_lists_at_midnight_on_the_log_clock() -> None:
    feed = RiskFeed()
    feed.send(DepositFunds(deposit_id="d", account_id="acct", amount=10_000))

    assert isinstance(feed.send(order(NEXT_DAY, "o-1"), MIDNIGHT - 1), OrderRejected)
    assert isinstance(feed.send(order(NEXT_DAY, "o-2"), MIDNIGHT), OrderAccepted)


def test_risk_checks_every_hour_of_a_block_and_capacity_deposits() -> None:
    feed = RiskFeed()
    feed.send(DepositFunds(deposit_id="d", account_id="acct", amount=10_000))
    block = PlaceBlockOrder(
        order_id="b-1",
        account_id="acct",
        symbols=[LAST_LISTED, NEXT_DAY],
        side="buy",
        price=1000,
        quantity=1,
    )
    deposit = DepositCapacity(deposit_id="c", account_id="acct", symbol=TODAY_NOON, quantity=3)

    refused = feed.send(block)
    assert isinstance(refused, OrderRejected)
    assert "not yet listed" in refused.message
    assert isinstance(feed.send(block, MIDNIGHT), BlockAccepted)
    assert isinstance(feed.send(deposit), CapacityDeposited)


def test_static_contracts_stay_listed_at_any_log_time() -> None:
    feed = RiskFeed()
    feed.send(DepositFunds(deposit_id="d", account_id="acct", amount=10_000))

    assert isinstance(feed.send(order("H100-80G.GZ.20271201T00", "o-1"), 0), OrderAccepted)
    assert isinstance(feed.send(order("H100-80G.GZ.20271201T00", "o-2"), 2 * 10**12), OrderAccepted)


class MarketFeed:
    def __init__(self, stage: MarketStage) -> None:
        self.stage = stage
        self.offset = 0

    def send(self, event: Event, at: int) -> list[Event]:
        stamp = EventStamp("cx.orders", 0, self.offset, at)
        self.offset += 1
        return self.stage.handle(event, stamp)


def accepted(symbol: str, order_id: str, account: str, side: str, price: int = 1000) -> Event:
    return OrderAccepted(
        event_id=f"in:{order_id}",
        ts=0,
        order_id=order_id,
        account_id=account,
        symbol=symbol,
        side=side,
        price=price,
        quantity=1,
    )


def tick(symbol: str, n: int) -> Event:
    return MarketControlRequested(
        event_id=f"in:tick-{n}", ts=0, operator_id="clock", action="tick", symbol=symbol
    )


def listed(events: list[Event]) -> dict[str, str]:
    return {
        e.symbol: e.state
        for e in events
        if isinstance(e, ContractStateChanged) and e.reason == "listed"
    }


def test_the_first_record_lists_every_rolled_hour_in_continuous_trading() -> None:
    stage = MarketStage(catalogue())
    feed = MarketFeed(stage)

    out = feed.send(tick(TODAY_NOON, 0), NOW)

    # 12:00 to 23:00 today and all of tomorrow, for each family.
    assert len(listed(out)) == 3 * (12 + 24)
    assert set(listed(out).values()) == {"continuous"}
    assert listed(out)[TODAY_NOON] == "continuous"
    assert GONE not in stage.books
    assert NEXT_DAY not in stage.books
    assert "H100-80G.GZ.20271201T00" in stage.books, "the static contracts stay"
    assert listed(feed.send(tick(TODAY_NOON, 1), NOW + HOUR)) == {}


def test_a_pre_open_market_lists_rolled_hours_in_pre_open() -> None:
    out = MarketFeed(MarketStage(catalogue(pre_open=True))).send(tick(TODAY_NOON, 0), NOW)

    assert set(listed(out).values()) == {"pre_open"}


def test_rolled_books_trade_close_at_their_gate_and_are_dropped_once_delivered() -> None:
    stage = MarketStage(catalogue())
    feed = MarketFeed(stage)
    feed.send(accepted(TODAY_NOON, "s-1", "seller", "sell"), NOW)

    out = feed.send(accepted(TODAY_NOON, "b-1", "buyer", "buy"), NOW + 1)
    assert [t.symbol for t in out if isinstance(t, TradeExecuted)] == [TODAY_NOON]

    feed.send(accepted(TODAY_NOON, "s-2", "seller", "sell"), NOW + 2)
    closed = feed.send(tick(TODAY_NOON, 0), NOW + HOUR)  # 11:00: the noon hour's gate
    assert [(e.symbol, e.reason) for e in closed if isinstance(e, OrderCancelled)] == [
        (TODAY_NOON, "gate_closure")
    ]
    assert stage.books[TODAY_NOON].state == "closed"

    delivered = feed.send(tick(LAST_LISTED, 1), NOW + 2 * HOUR)  # 12:00: delivery starts
    assert [
        e.state for e in delivered if isinstance(e, ContractStateChanged) and e.symbol == TODAY_NOON
    ] == ["delivered"]
    assert TODAY_NOON not in stage.books
    assert "H100-80G.GZ.20261126T13" in stage.books

    late = feed.send(accepted(TODAY_NOON, "b-2", "buyer", "buy"), NOW + 2 * HOUR + 1)
    assert [(e.reason, e.remaining) for e in late if isinstance(e, OrderCancelled)] == [
        ("contract_not_trading", 1)
    ]


def test_midnight_lists_the_next_day() -> None:
    stage = MarketStage(catalogue())
    feed = MarketFeed(stage)
    feed.send(tick(TODAY_NOON, 0), NOW)

    out = feed.send(tick(LAST_LISTED, 1), MIDNIGHT)

    assert len(listed(out)) == 3 * 24
    assert listed(out)[NEXT_DAY] == "continuous"
    assert "H100-80G.GZ.20261128T23" in stage.books


def _orders(day_offset: int) -> list[tuple[Event, int]]:
    """Orders on rolled contracts over three days, with the log times they arrive at."""
    inputs: list[tuple[Event, int]] = []
    for n in range(60):
        at = NOW + day_offset * DAY + n * 37 * 60_000
        hours_ahead = 3 + n % 20
        moment = datetime.fromtimestamp((at + hours_ahead * HOUR) // 1000, CHINA_STANDARD_TIME)
        symbol = f"{FAMILIES[n % 3]}.{moment:%Y%m%dT%H}"
        side = "buy" if n % 2 else "sell"
        inputs.append((accepted(symbol, f"o-{day_offset}-{n}", f"a-{n % 4}", side, 1000), at))
    return inputs


def test_snapshot_and_restore_keep_the_lazily_listed_books_and_the_hash() -> None:
    inputs = _orders(0) + _orders(1) + _orders(2)
    whole = MarketStage(catalogue())
    whole_feed = MarketFeed(whole)
    outputs = [whole_feed.send(event, at) for event, at in inputs]

    half = len(inputs) // 2
    first = MarketStage(catalogue())
    first_feed = MarketFeed(first)
    for event, at in inputs[:half]:
        first_feed.send(event, at)
    saved = json.loads(json.dumps(first.snapshot()))
    restored = MarketStage.restore(catalogue(), saved)
    assert restored.state_hash() == first.state_hash()
    assert set(restored.books) == set(first.books)
    restored_feed = MarketFeed(restored)
    restored_feed.offset = first_feed.offset
    tail = [restored_feed.send(event, at) for event, at in inputs[half:]]

    assert restored.state_hash() == whole.state_hash()
    assert [[encode(e) for e in out] for out in tail] == [
        [encode(e) for e in out] for out in outputs[half:]
    ]
    assert any(isinstance(e, TradeExecuted) for out in outputs for e in out)
    # Only the hours still to come are kept: past days were delivered and dropped.
    assert not any(s.endswith(("20261126T12", "20261127T05")) for s in whole.books)


def test_matching_partitions_get_their_own_families() -> None:
    topics = Topics.named("t", 4, 4)
    runner = MatchingRunner(None, topics, catalogue(), None)  # type: ignore[arg-type]

    by_partition = {p: runner._listed(p).rolled_families for p in range(4)}

    for family in FAMILIES:
        (holder,) = [p for p, families in by_partition.items() if family in families]
        assert holder == topics.family_partition(family)
        assert holder == topics.market_partition(f"{family}.20261126T12")


def test_settings_list_the_families_named() -> None:
    settings = Settings(CX_LISTINGS="H100-80G.GZ, TOK-QWEN.YRD", CX_LISTING_DAYS=3)

    assert settings.listing_rules() == [ListingRule(("H100-80G.GZ", "TOK-QWEN.YRD"), 3, 92)]
    assert settings.catalogue().rolled_families == ["H100-80G.GZ", "TOK-QWEN.YRD"]
    assert Settings().listing_rules() == []
    # Unless told otherwise, hours list a month ahead and term contracts three months ahead.
    assert Settings(CX_LISTINGS="CPU.GZ").listing_rules() == [ListingRule(("CPU.GZ",), 30, 92)]
    assert Settings().catalogue().symbols == default_catalogue().symbols


@pytest.mark.parametrize(
    ("listings", "days", "error"),
    [
        ("H100-80G.XJ", 1, "unknown region 'XJ'"),
        ("H100-80G", 1, "does not match CLASS.REGION"),
        ("CPU.GZ", 40, "less than or equal to 31"),
    ],
)
def test_settings_refuse_families_outside_the_grammar(listings: str, days: int, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Settings(CX_LISTINGS=listings, CX_LISTING_DAYS=days)
