"""Strips: a week (or its nights) of a card class bought in its own book at a price per
card-hour, cascaded into its hourly contracts when the first of them lists, and partly resold,
to the fen, through risk, matching (and its delivery desk) and a settlement-style ledger; the
replay of what was stored reproduces the live state.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import datetime

import pytest

from exchange.domain.accounts import Accounts, Balance
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    Catalogue,
    ListingRule,
    MarketRules,
    parse_symbol,
    strip_hours,
    to_utc_ms,
)
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    CancelOrder,
    CapacityDeposited,
    CapacityWithdrawn,
    ControlMarket,
    DeliveryObligation,
    DeliverySettled,
    DepositCapacity,
    DepositFunds,
    Event,
    EventStamp,
    FundsDeposited,
    ListingChanged,
    MarketControlRejected,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    PlaceBlockOrder,
    PlaceOrder,
    RecallCapacity,
    RejectReason,
    ReportMetering,
    RequestRejected,
    Side,
    StripCascaded,
    StripPosition,
    decode_event,
    encode,
    split_over_hours,
)
from exchange.domain.risk import RiskStage
from settlement.audit import cascade_capacity, deposit_capacity
from settlement.replay import ExchangeState
from tests.test_bank import SEAL, Bank, sealed
from tests.test_vouchers import VoucherBank, programme

HOUR = 3_600_000
WEEK = "H100-80G.GZ.W20271206"
NIGHTS = "H100-80G.GZ.N20271206"
FIRST = "H100-80G.GZ.20271206T00"
FIFTH = "H100-80G.GZ.20271206T05"
SEVENTH = "H100-80G.GZ.20271206T07"
RULES = MarketRules(bond_bps=333, fees=(("H100-80G", -10, 20),), delivery_window_ms=2 * HOUR)
LISTING = ListingRule(("H100-80G.GZ",), 2, 14)
TRADING = to_utc_ms(datetime(2027, 11, 29, 10, tzinfo=CHINA_STANDARD_TIME))
CASCADE = to_utc_ms(datetime(2027, 12, 4, tzinfo=CHINA_STANDARD_TIME))
DELIVERY = to_utc_ms(parse_symbol(FIRST).delivery_start)


class StripBank(Bank):
    """The bank loop over a catalogue that lists two days of hours and two weeks of strips."""

    def __init__(self) -> None:
        self.catalogue = Catalogue([], RULES, [LISTING])
        self.risk = RiskStage(self.catalogue, SEAL)
        self.market = MarketStage(self.catalogue)
        self.ledger = Accounts(RULES, journal=True)
        self.offset = 0
        self.ts = TRADING
        self.events: list[Event] = []

    def tick(self, at: int, symbol: str = FIRST) -> list[Event]:
        return self.send(ControlMarket(operator_id="clock", action="tick", symbol=symbol), at)


def order(
    order_id: str, account: str, side: Side, price: int, quantity: int, symbol: str = WEEK
) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id, account_id=account, symbol=symbol, side=side, price=price,
        quantity=quantity,
    )  # fmt: skip


def funds(account: str, amount: int) -> DepositFunds:
    return DepositFunds(deposit_id=f"f-{account}", account_id=account, amount=amount)


def only(events: list[Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def week_bought_and_cascaded() -> StripBank:
    """p1 deposits 10 cards for the week and sells 4 of them to b1 at 10.10 元 a card-hour; b1
    resells one card of the week to b2 at 10.20 元; the week cascades."""
    bank = StripBank()
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=WEEK, quantity=10))
    for account in ("b1", "b2", "b3"):
        bank.send(funds(account, 1_000_000))
    ask = bank.send(order("s1", "p1", "sell", 1_010, 10))[0]
    assert isinstance(ask, OrderAccepted)
    bank.send(order("b1", "b1", "buy", 1_010, 4))
    bank.send(CancelOrder(order_id="s1", account_id="p1"))
    resale = bank.send(order("r1", "b1", "sell", 1_020, 1))[0]
    assert isinstance(resale, OrderAccepted)
    assert resale.backing == "entitlement"
    bank.send(order("b2", "b2", "buy", 1_020, 1))
    bank.tick(CASCADE)
    return bank


def test_a_strip_is_priced_per_card_hour_its_notional_counts_every_hour() -> None:
    bank = StripBank()
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=WEEK, quantity=10))
    bank.send(funds("b1", 1_000_000))

    ask = bank.send(order("s1", "p1", "sell", 1_010, 10))[0]
    # The bond: 3.33% of 10.10 元 for each of the week's 168 hours, 5,650.344 rounded up,
    # per card; held from the provider's cash for the 10 cards offered.
    assert strip_hours(WEEK) == 168
    assert isinstance(ask, OrderAccepted)
    assert ask.bond_per_unit == 5_651
    assert bank.cash("p1") == 1_000_000
    assert bank.ledger.cash["p1"] == Balance(available=1_000_000 - 56_510, held=56_510)

    bank.send(order("b1", "b1", "buy", 1_010, 4))
    # 4 cards x 168 hours x 10.10 元 = 6,787.20 元 into the week's escrow, and the taker fee
    # of 0.2% (1,357.44 fen, rounded down).
    assert bank.ledger.ledger[f"escrow:{WEEK}"] == 678_720
    assert bank.cash("b1") == 1_000_000 - 678_720 - 1_357
    assert bank.ledger.ledger["bond:p1"] == 4 * 5_651
    assert bank.ledger.positions == {("b1", WEEK): 4}
    assert bank.risk.accounts.available_capacity("p1", WEEK) == 0
    assert bank.risk.accounts.capacity[("p1", WEEK)] == Balance(available=0, held=6)


def test_a_weekly_contract_cascades_into_its_hours_to_the_fen() -> None:
    bank = week_bought_and_cascaded()

    # The resale before the cascade: b1 is paid 1 x 168 x 10.20 元 out of the week's escrow
    # with a 0.1% maker rebate of 171 fen; b2 pays it and a 342 fen taker fee.
    assert bank.cash("b1") == 1_000_000 - 678_720 - 1_357 + 171_360 + 171
    assert bank.cash("b2") == 1_000_000 - 171_360 - 342
    (cascaded,) = [c for c in bank.of(StripCascaded) if c.symbol == WEEK]
    hours = [spec.symbol for spec in parse_symbol(WEEK).hours()]
    assert cascaded.hours == hours
    assert len(hours) == 168
    assert cascaded.holders == [
        StripPosition(account_id="b1", units=3),
        StripPosition(account_id="b2", units=1),
    ]
    # The maker's fee on 6,787.20 元 at -0.1%: a rebate of 678 fen, paid at delivery.
    assert cascaded.providers == [
        StripPosition(account_id="p1", units=4, amount=678_720, bond=22_604, fee=-678)
    ]
    assert cascaded.escrow == [4_040] * 168
    # The escrow moved from the week to its hours; every hour holds 40.40 元.
    assert bank.ledger.ledger.get(f"escrow:{WEEK}", 0) == 0
    assert all(bank.ledger.ledger[f"escrow:{h}"] == 4_040 for h in hours)
    # Entitlements and the unsold 6 deposited cards are in every hour, in risk and the ledger.
    for accounts in (bank.ledger, bank.risk.accounts):
        assert (
            accounts.positions.get(("b1", WEEK), 0),
            accounts.positions.get(("b2", WEEK), 0),
        ) == (0, 0)
        assert all(accounts.positions[("b1", h)] == 3 for h in hours)
        assert all(accounts.positions[("b2", h)] == 1 for h in hours)
    assert bank.risk.accounts.capacity[("p1", WEEK)] == Balance(available=0, held=0)
    assert all(bank.risk.accounts.available_capacity("p1", h) == 6 for h in hours)
    # The desk's provision in each hour: 4 cards, 40.40 元, the bond and fee split so the
    # parts add to the fen (22,604 / 168 = 134.55: 134 or 135 fen an hour).
    provisions = bank.market.delivery.provisions
    bonds = [provisions[h]["p1"].bond for h in hours]
    fees = [provisions[h]["p1"].fee for h in hours]
    assert bonds == split_over_hours(22_604, 168)
    assert sum(bonds) == 22_604
    assert set(bonds) == {134, 135}
    assert fees == split_over_hours(-678, 168)
    assert sum(fees) == -678
    assert all(
        provisions[h]["p1"].units == 4 and provisions[h]["p1"].amount == 4_040 for h in hours
    )
    assert bank.ledger.trial_balance() == 0


def test_split_over_hours_adds_up_to_the_fen() -> None:
    assert split_over_hours(10, 3) == [3, 3, 4]
    assert split_over_hours(-678, 168)[:3] == [-5, -4, -4]
    assert sum(split_over_hours(-678, 168)) == -678
    assert split_over_hours(0, 4) == [0, 0, 0, 0]


def test_a_cascaded_week_is_resold_by_the_hour_and_delivered_to_the_fen() -> None:
    bank = week_bought_and_cascaded()
    hours = [spec.symbol for spec in parse_symbol(WEEK).hours()]
    bond_parts = split_over_hours(22_604, 168)
    fee_parts = split_over_hours(-678, 168)

    # b1 resells 2 of its 3 cards in the sixth hour; it is paid 24.00 元 out of that hour's
    # escrow and a 2 fen maker rebate, b3 pays 24.00 元 and a 4 fen taker fee.
    assert isinstance(bank.send(order("r2", "b1", "sell", 1_200, 2, FIFTH))[0], OrderAccepted)
    before = bank.cash("b1")
    bank.send(order("b3", "b3", "buy", 1_200, 2, FIFTH))
    assert bank.cash("b1") == before + 2_400 + 2
    assert bank.cash("b3") == 1_000_000 - 2_404
    assert bank.ledger.positions[("b1", FIFTH)] == 1
    assert bank.ledger.positions[("b3", FIFTH)] == 2
    # p1 sells one of its unsold cards of the eighth hour by the hour, with an hourly bond.
    ask = bank.send(order("s2", "p1", "sell", 1_100, 1, SEVENTH))[0]
    assert isinstance(ask, OrderAccepted)
    assert ask.backing == "capacity"
    assert ask.bond_per_unit == 37

    # The first hour is delivered: 3 cards to b1, 1 to b2, its escrow, bond and fee shares.
    obligations = only(bank.tick(DELIVERY), DeliveryObligation)
    assert [(o.buyer_id, o.quantity, o.amount, o.bond, o.fee) for o in obligations] == [
        ("b1", 3, 3_030, bond_parts[0] * 3 // 4, fee_parts[0] * 3 // 4),
        (
            "b2",
            1,
            1_010,
            bond_parts[0] - bond_parts[0] * 3 // 4,
            fee_parts[0] - fee_parts[0] * 3 // 4,
        ),
    ]
    for buyer, units in (("b1", 3), ("b2", 1)):
        bank.send(
            ReportMetering(
                report_id=f"m-{buyer}",
                account_id="p1",
                symbol=FIRST,
                buyer_id=buyer,
                delivered=units,
            )
        )
    p1_before = bank.cash("p1")
    settled = only(bank.tick(DELIVERY + 3 * HOUR + 1), DeliverySettled)
    first = [s for s in settled if s.symbol == FIRST]
    assert [(s.buyer_id, s.paid, s.refund, s.penalty) for s in first] == [
        ("b1", 3_030, 0, 0),
        ("b2", 1_010, 0, 0),
    ]
    # The provider is paid the hour's 40.40 元 and its rebate share (a negative fee).
    assert sum(s.paid - s.fee for s in first) == 4_040 - fee_parts[0]
    assert bank.ledger.ledger.get(f"escrow:{FIRST}", 0) == 0
    # Only the first hour's window has ended: its two settlements are all p1 was paid, with
    # its bond for that hour back in full.
    assert {s.symbol for s in settled} == {FIRST}
    assert bank.cash("p1") == p1_before + 4_040 - fee_parts[0] + bond_parts[0]
    assert bank.ledger.ledger["bond:p1"] == 22_604 - bond_parts[0]
    assert bank.ledger.positions[("b1", FIRST)] == 0
    assert bank.ledger.positions[("b1", hours[1])] == 3
    assert bank.ledger.trial_balance() == 0


def test_a_nights_strip_covers_the_night_hours_of_each_day() -> None:
    bank = StripBank()
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=NIGHTS, quantity=2))
    bank.send(funds("b1", 1_000_000))
    bank.send(order("s1", "p1", "sell", 800, 2, NIGHTS))
    bank.send(order("b1", "b1", "buy", 800, 2, NIGHTS))
    # 2 cards x 56 night hours x 8.00 元 = 896.00 元, and a 179 fen taker fee.
    assert strip_hours(NIGHTS) == 56
    assert bank.cash("b1") == 1_000_000 - 89_600 - 179

    bank.tick(CASCADE)
    (cascaded,) = [c for c in bank.of(StripCascaded) if c.symbol == NIGHTS]
    assert len(cascaded.hours) == 56
    assert {parse_symbol(h).delivery_start.hour for h in cascaded.hours} == set(range(8))
    assert cascaded.hours[8] == "H100-80G.GZ.20271207T00"
    assert cascaded.escrow == [1_600] * 56
    assert all(bank.ledger.positions[("b1", h)] == 2 for h in cascaded.hours)
    assert ("b1", "H100-80G.GZ.20271206T08") not in bank.ledger.positions
    assert bank.ledger.trial_balance() == 0


def test_an_order_on_a_strip_after_its_cascade_is_refused_saying_into_what() -> None:
    bank = week_bought_and_cascaded()
    before = bank.risk.state_hash()

    refused = bank.send(order("late", "b1", "buy", 1_010, 1))[0]
    deposit = bank.send(DepositCapacity(deposit_id="c2", account_id="p1", symbol=WEEK, quantity=1))[
        0
    ]

    assert isinstance(refused, OrderRejected)
    assert refused.reason == RejectReason.CONTRACT_CLOSED
    assert refused.message == (
        f"contract {WEEK!r} is retired: it cascaded at 2027-12-04T00:00:00+08:00 into its 168 "
        f"hourly contracts {FIRST} to H100-80G.GZ.20271212T23; trade those"
    )
    assert deposit.reason == RejectReason.CONTRACT_CLOSED
    assert bank.risk.state_hash() == before


def test_a_resale_of_an_hour_already_delivered_is_refused_and_changes_nothing() -> None:
    bank = week_bought_and_cascaded()
    bank.tick(DELIVERY)
    before = bank.risk.state_hash()

    refused = bank.send(order("r-late", "b1", "sell", 1_200, 1, FIRST))[0]

    assert isinstance(refused, OrderRejected)
    assert refused.reason == RejectReason.CONTRACT_CLOSED
    assert refused.message == (
        f"b1 holds 3 units of {FIRST}, but its trading closed at 2027-12-05T23:00:00+08:00 and "
        "it is delivered from 2027-12-06T00:00:00+08:00: an hour already delivered, or about "
        "to be, cannot be resold"
    )
    assert bank.risk.state_hash() == before


def test_a_strip_cascades_once_a_second_cascade_changes_nothing() -> None:
    bank = week_bought_and_cascaded()
    (cascaded,) = [c for c in bank.of(StripCascaded) if c.symbol == WEEK]

    # The strip's delivery start delivers its closed book: it does not cascade again.
    later = bank.tick(DELIVERY)
    again = cascaded.model_copy(update={"event_id": "a-duplicate"})
    bank.ledger.apply(again)
    bank.risk.apply_outcome(again, lambda _: True, EventStamp("f", 0, 10**6, DELIVERY))

    assert not [c for c in only(later, StripCascaded) if c.symbol == WEEK]
    assert bank.ledger.ledger.get(f"escrow:{WEEK}", 0) == 0
    assert all(bank.ledger.ledger[f"escrow:{h}"] in (0, 4_040) for h in cascaded.hours)
    assert bank.ledger.positions[("b1", cascaded.hours[1])] == 3
    assert bank.risk.accounts.positions[("b1", cascaded.hours[1])] == 3
    assert bank.ledger.trial_balance() == 0


def test_a_block_of_strips_is_refused() -> None:
    bank = StripBank()
    bank.send(funds("b1", 1_000_000))
    refused = bank.send(
        PlaceBlockOrder(
            order_id="blk", account_id="b1", symbols=[WEEK], side="buy", price=1_000, quantity=1
        )
    )[0]
    assert isinstance(refused, OrderRejected)
    assert refused.reason == RejectReason.INVALID_BLOCK


def test_strips_are_refused_where_the_first_hours_of_a_day_would_never_list() -> None:
    # With hours listed 0 days ahead, a day's hours list at its midnight, so its first hours
    # (those whose gate closes by then: T00 and T01 under a 1-hour gate closure) never have a
    # book; a week's cascade put positions and escrow into them that were never allocated,
    # delivered nor refunded (4,000 fen stuck in each such hour's escrow for a card at 40 元).
    for gate in (60 * 60_000, None):
        rules = MarketRules(gate_closure_ms=gate)
        with pytest.raises(ValueError, match=r"H100-80G\.GZ's strips need its hours listed"):
            Catalogue([], rules, [ListingRule(("H100-80G.GZ",), 0, 14)])
    # A day ahead lists every hour before its gate; token bundles cascade into no hours.
    Catalogue([], RULES, [ListingRule(("H100-80G.GZ",), 1, 14)])
    Catalogue([], RULES, [ListingRule(("TOK-QWEN.YRD",), 0, 30)])
    # Two rules naming the family list it as far ahead as the longer says.
    Catalogue([], RULES, [ListingRule(("H100-80G.GZ",), 0, 14), ListingRule(("H100-80G.GZ",), 2)])


def test_a_day_ahead_order_on_a_strip_is_refused_not_traded_at_once() -> None:
    # A strip's book trades continuously; a day-ahead order on it was accepted (its first
    # day's gate had not passed) and traded at once against the resting ask, not in an auction.
    rules = MarketRules(bond_bps=333, day_ahead_gate_ms=12 * HOUR)
    bank = StripBank()
    bank.catalogue = Catalogue([], rules, [LISTING])
    bank.risk = RiskStage(bank.catalogue, SEAL)
    bank.market = MarketStage(bank.catalogue)
    bank.ledger = Accounts(rules, journal=True)
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=WEEK, quantity=2))
    bank.send(funds("b1", 1_000_000))
    bank.send(order("s1", "p1", "sell", 1_000, 2))

    day_ahead = order("b1", "b1", "buy", 1_000, 1).model_copy(update={"day_ahead": True})
    outcome = bank.send(day_ahead)

    (refused,) = outcome
    assert isinstance(refused, OrderRejected)
    assert refused.reason == RejectReason.NO_DAY_AHEAD_AUCTION
    assert "term contract" in refused.message
    assert bank.cash("b1") == 1_000_000
    assert bank.ledger.ledger.get(f"escrow:{WEEK}", 0) == 0


def test_a_strip_sell_reaching_matching_after_the_cascade_frees_its_capacity_in_the_hours() -> None:
    # Risk accepts a sell of the week just before its cascade; matching reads it just after
    # and cancels it (contract_closed). The cascade had moved only the capacity not held for
    # it, and the cancellation returned the rest to the strip, where it could be neither sold
    # (the book is closed) nor withdrawn (its gate passed): 3 cards in each of 168 hours lost.
    bank = StripBank()
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=WEEK, quantity=10))
    bank.send(funds("b1", 1_000_000))
    bank.send(order("s1", "p1", "sell", 1_010, 4))
    bank.send(order("b1", "b1", "buy", 1_010, 4))
    bank.offset += 1
    late = bank.risk.handle(
        sealed(order("s2", "p1", "sell", 1_010, 3)), EventStamp("c", 0, bank.offset, CASCADE - 1)
    )
    assert isinstance(late, OrderAccepted)
    bank.ledger.apply(late)
    bank.events.append(late)
    bank.tick(CASCADE)
    bank.offset += 1
    cancelled = bank.market.handle(late, EventStamp("o", 0, bank.offset, CASCADE + 1))
    for event in cancelled:
        bank.ledger.apply(event)
        bank.risk.apply_outcome(event, lambda _: True, EventStamp("f", 0, bank.offset, CASCADE))
    bank.events.extend(cancelled)

    (gone,) = only(cancelled, OrderCancelled)
    assert gone.reason == "contract_closed"
    hours = [spec.symbol for spec in parse_symbol(WEEK).hours()]
    for accounts in (bank.ledger, bank.risk.accounts):
        assert accounts.capacity[("p1", WEEK)] == Balance(available=0, held=0)
        assert all(accounts.capacity[("p1", hour)] == Balance(available=6) for hour in hours)
    # The 6 cards sell in an hour, as the cascade's other 3 would.
    assert isinstance(bank.send(order("s3", "p1", "sell", 1_000, 6, FIRST))[0], OrderAccepted)
    replayed = ExchangeState(bank.catalogue, partitions=1)
    for position, event in enumerate(bank.events, start=1):
        replayed.apply_event(decode_event(encode(event)), position)
    live = hashlib.sha256()
    bank.ledger.digest(live)
    assert replayed.accounts_hash() == live.hexdigest()


def test_strip_capacity_deposited_as_it_cascades_becomes_capacity_in_its_hours() -> None:
    # Risk stamps a deposit of the week just before the cascade (its command log time) after
    # it folded the cascade matching reported (the matching log runs ahead); a replay may
    # equally meet the deposit after the cascade in the store. Either way the 5 cards stayed
    # in the strip, where they could be neither sold nor withdrawn.
    bank = StripBank()
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=WEEK, quantity=2))
    bank.tick(CASCADE)
    deposited = bank.send(
        DepositCapacity(deposit_id="c2", account_id="p1", symbol=WEEK, quantity=5), CASCADE - 1
    )

    assert [type(e) for e in deposited] == [CapacityDeposited]
    hours = [spec.symbol for spec in parse_symbol(WEEK).hours()]
    for accounts in (bank.ledger, bank.risk.accounts):
        assert accounts.capacity[("p1", WEEK)] == Balance(available=0, held=0)
        assert all(accounts.capacity[("p1", hour)] == Balance(available=7) for hour in hours)


def test_an_interruptible_week_is_recalled_whole_before_its_cascade_and_by_the_hour_after() -> None:
    week, first = "H100-80G-INT.GZ.W20271206", "H100-80G-INT.GZ.20271206T00"
    bank = StripBank()
    bank.catalogue = Catalogue([], RULES, [ListingRule(("H100-80G-INT.GZ",), 2, 14)])
    bank.risk = RiskStage(bank.catalogue, SEAL)
    bank.market = MarketStage(bank.catalogue)
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=week, quantity=10))
    bank.send(funds("b1", 1_000_000))
    bank.send(order("s1", "p1", "sell", 1_000, 10, week))
    bank.send(order("b1", "b1", "buy", 1_000, 4, week))

    before = bank.send(RecallCapacity(recall_id="r1", account_id="p1", symbol=week, quantity=1))
    # A card of the week: its 168 card-hours' escrow back, and its bond (3.33% of 1,680 元,
    # 5,595 fen rounded up), within 10% of the refund, to the buyer.
    (settled,) = only(before, DeliverySettled)
    assert (settled.quantity, settled.refund, settled.penalty) == (1, 168_000, 5_595)
    bank.tick(CASCADE, first)

    after = bank.send(RecallCapacity(recall_id="r2", account_id="p1", symbol=week, quantity=1))
    # After the cascade the week has nothing sold: it said "exceeds the 0 units ... p1 sold".
    (refused,) = only(after, RequestRejected)
    assert refused.reason == RejectReason.CONTRACT_CLOSED
    assert "recalled by the hour" in refused.message
    hourly = bank.send(RecallCapacity(recall_id="r3", account_id="p1", symbol=first, quantity=1))
    (settled,) = only(hourly, DeliverySettled)
    assert (settled.symbol, settled.refund, settled.penalty) == (first, 1_000, 33)
    assert bank.ledger.trial_balance() == 0


def test_capacity_moves_to_the_hours_whether_risk_or_the_store_holds_the_cascade_first() -> None:
    # Risk folds a deposit and a withdrawal of the week it decided before the cascade it learns
    # of later; matching records them on the events topic as it reads them, here after its
    # cascade, so settlement and replays fold them after it. Both end with the same capacity:
    # the store's order left the withdrawal's 3 cards short in the strip (-3) and over in
    # every hour, and the late deposit's 2 in the strip.
    hours = [spec.symbol for spec in parse_symbol(WEEK).hours()]
    cascaded = StripCascaded(
        event_id="o:9", ts=CASCADE, symbol=WEEK, hours=hours, escrow=[0] * len(hours)
    )
    deposit, withdrawal, late = (
        CapacityDeposited(
            event_id="c:1", ts=TRADING, deposit_id="c1", account_id="p1", symbol=WEEK, quantity=10
        ),
        CapacityWithdrawn(
            event_id="c:2", ts=CASCADE - 2, withdrawal_id="w1", account_id="p1", symbol=WEEK,
            quantity=3,
        ),
        CapacityDeposited(
            event_id="c:3", ts=CASCADE - 1, deposit_id="c2", account_id="p1", symbol=WEEK,
            quantity=2,
        ),
    )  # fmt: skip
    # And a sell of 4 cards risk accepted before it too, which matching cancels after it.
    sell = OrderAccepted(
        event_id="c:4", ts=CASCADE - 1, order_id="s9", account_id="p1", symbol=WEEK, side="sell",
        price=1_000, quantity=4, backing="capacity", bond_per_unit=5_595,
    )  # fmt: skip
    cancelled = OrderCancelled(
        event_id="o:10", ts=CASCADE, order_id="s9", account_id="p1", symbol=WEEK, side="sell",
        remaining=4, reason="contract_closed",
    )  # fmt: skip
    funded = FundsDeposited(
        event_id="c:0", ts=TRADING, deposit_id="f", account_id="p1", amount=99_999, currency="CNY"
    )
    in_risk, in_store = Accounts(RULES), Accounts(RULES)
    for event in (funded, deposit, withdrawal, late, sell, cascaded, cancelled):
        in_risk.apply(event)
    for event in (funded, deposit, cascaded, withdrawal, late, sell, cancelled):
        in_store.apply(event)

    for accounts in (in_risk, in_store):
        assert accounts.capacity[("p1", WEEK)] == Balance(available=0, held=0)
        assert all(accounts.capacity[("p1", hour)] == Balance(available=9) for hour in hours)
        assert accounts.cash["p1"] == Balance(available=99_999)
    counted: dict[str, int] = defaultdict(int)
    deposit_capacity(deposit, counted, {})
    cascade_capacity(cascaded, 2, counted, {})
    for event in (withdrawal, late):
        deposit_capacity(event, counted, {WEEK: 2})
    assert dict(counted) == dict.fromkeys(hours, 9)


def test_resting_strip_orders_are_cancelled_at_the_cascade_and_their_holds_released() -> None:
    bank = StripBank()
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=WEEK, quantity=3))
    bank.send(funds("b1", 1_000_000))
    bank.send(order("s1", "p1", "sell", 1_200, 3))
    bank.send(order("b1", "b1", "buy", 1_000, 2))
    assert bank.ledger.cash["b1"].held > 0

    cancelled = only(bank.tick(CASCADE), OrderCancelled)

    assert sorted(c.order_id for c in cancelled if c.symbol == WEEK) == sorted(
        e.order_id for e in bank.of(OrderAccepted)
    )
    assert bank.ledger.cash["b1"] == Balance(available=1_000_000, held=0)
    assert bank.ledger.cash["p1"] == Balance(available=1_000_000, held=0)
    hours = [spec.symbol for spec in parse_symbol(WEEK).hours()]
    assert all(bank.risk.accounts.available_capacity("p1", h) == 3 for h in hours)


def test_the_replay_of_the_stored_events_reproduces_the_live_state() -> None:
    bank = week_bought_and_cascaded()
    bank.send(order("r2", "b1", "sell", 1_200, 2, FIFTH))
    bank.send(order("b3", "b3", "buy", 1_200, 2, FIFTH))
    bank.tick(DELIVERY)
    bank.tick(DELIVERY + 3 * HOUR + 1)

    replayed = ExchangeState(bank.catalogue, partitions=1)
    for position, event in enumerate(bank.events, start=1):
        replayed.apply_event(decode_event(encode(event)), position)

    assert replayed.books_hash() == bank.market.state_hash()
    live = hashlib.sha256()
    bank.ledger.digest(live)
    assert replayed.accounts_hash() == live.hexdigest()
    assert replayed.accounts.trial_balance() == 0


def test_a_strip_delisted_before_its_cascade_cascades_at_once_and_stays_retired() -> None:
    bank = StripBank()
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=WEEK, quantity=2))
    bank.send(funds("b1", 1_000_000))
    bank.send(order("s1", "p1", "sell", 1_010, 2))
    bank.send(order("b1", "b1", "buy", 1_010, 2))

    delisted = bank.send(ControlMarket(operator_id="op", action="delist", symbol=WEEK))
    (cascaded,) = only(delisted, StripCascaded)
    relisted = bank.send(ControlMarket(operator_id="op", action="list", symbol=WEEK))

    assert cascaded.holders == [StripPosition(account_id="b1", units=2)]
    assert cascaded.escrow == [2_020] * 168
    assert all(bank.ledger.positions[("b1", h)] == 2 for h in cascaded.hours)
    (refused,) = only(relisted, MarketControlRejected)
    assert refused.reason == RejectReason.CONTRACT_CLOSED
    assert not only(relisted, ListingChanged)
    # Its cascade time passes without a second cascade.
    assert not [c for c in only(bank.tick(CASCADE), StripCascaded) if c.symbol == WEEK]
    assert bank.ledger.trial_balance() == 0


class VoucherStripBank(StripBank, VoucherBank):
    """The strip market with approved grants fed back to risk, as matching does."""


def test_a_voucher_on_a_week_follows_its_hours_and_is_clawed_back_on_a_resale() -> None:
    bank = VoucherStripBank()
    bank.send(programme(budget=1_000_000, cap=700, cap_per_enterprise=200_000))
    bank.grant("b1", 100_000)
    bank.send(funds("p1", 1_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=WEEK, quantity=2))
    bank.send(funds("b1", 1_000_000))
    bank.send(funds("b3", 1_000_000))
    bank.send(order("s1", "p1", "sell", 1_010, 2))

    buy = order("b1", "b1", "buy", 1_010, 2).model_copy(update={"voucher": "hz"})
    accepted = bank.send(buy)[0]
    # 30% of 2 x 168 x 10.10 元 is 1,018.08 元, under the cap of 7 元 for each of the 168
    # hourly contracts (1,176 元): the grant of 1,000 元 binds.
    assert isinstance(accepted, OrderAccepted)
    assert accepted.voucher_reserved == 100_000
    assert bank.cash("b1") == 1_000_000 - 339_360 - 678 + 100_000

    bank.tick(CASCADE)
    parts = split_over_hours(100_000, 168)
    hours = [spec.symbol for spec in parse_symbol(WEEK).hours()]
    for accounts in (bank.ledger, bank.risk.accounts):
        assert ("b1", WEEK, "hz") not in accounts.subsidised
        assert [accounts.subsidised[("b1", h, "hz")] for h in hours] == [[2, p] for p in parts]
    assert parts[5] == 595

    # b1 resells 1 of its 2 cards of the sixth hour: paid 12.00 元 and a 1 fen rebate, less
    # half that hour's voucher part (297 fen), which returns to its grant.
    before = bank.cash("b1")
    bank.send(order("r1", "b1", "sell", 1_200, 1, FIFTH))
    bank.send(order("b3", "b3", "buy", 1_200, 1, FIFTH))
    assert bank.cash("b1") == before + 1_200 + 1 - 297
    assert bank.ledger.grants[("hz", "b1")].clawed_back == 297
    assert bank.ledger.subsidised[("b1", FIFTH, "hz")] == [1, 298]
    assert bank.ledger.trial_balance() == 0


def test_the_audit_reports_a_strip_cascaded_twice_and_carries_capacity_to_the_hours() -> None:
    hours = ["H100-80G.GZ.20271206T00", "H100-80G.GZ.20271206T01"]
    cascaded = StripCascaded(event_id="x", ts=CASCADE, symbol=NIGHTS, hours=hours, escrow=[0, 0])
    deposited: dict[str, int] = defaultdict(int, {NIGHTS: 5})
    seen: dict[str, int] = {}

    assert cascade_capacity(cascaded, 7, deposited, seen) == []
    again = cascade_capacity(cascaded.model_copy(update={"event_id": "y"}), 9, deposited, seen)

    assert dict(deposited) == {hours[0]: 5, hours[1]: 5}
    assert [(d.kind, d.positions) for d in again] == [("strip-cascaded-twice", (7, 9))]
    # Deposited after the cascade (stored after it), it is capacity in every hour of the
    # strip, as the money rules fold it; before, it was counted in the strip and reported as
    # capacity not conserved there and in each hour.
    late = CapacityDeposited(
        event_id="z", ts=CASCADE, deposit_id="c9", account_id="p1", symbol=NIGHTS, quantity=2
    )
    deposit_capacity(late, deposited, seen)
    assert NIGHTS not in deposited
    assert all(deposited[spec.symbol] == 2 for spec in parse_symbol(NIGHTS).hours()[2:])
    assert deposited[hours[0]] == deposited[hours[1]] == 7


def test_snapshots_after_a_cascade_restore_the_same_state() -> None:
    bank = week_bought_and_cascaded()

    market = MarketStage.restore(bank.catalogue, bank.market.snapshot())
    ledger = Accounts.restore(bank.ledger.snapshot(), RULES)

    assert market.state_hash() == bank.market.state_hash()
    assert market.delivery.cascaded == {WEEK, NIGHTS}
    assert ledger.cascaded_strips == {WEEK, NIGHTS}
    restored, live = hashlib.sha256(), hashlib.sha256()
    ledger.digest(restored)
    bank.ledger.digest(live)
    assert restored.hexdigest() == live.hexdigest()
