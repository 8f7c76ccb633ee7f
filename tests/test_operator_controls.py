"""Operator controls through the risk and matching stages: who may send them, what they do.

Uses the stage wiring tests' loop (risk, matching and a settlement-style ledger in log order).
"""

from __future__ import annotations

from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    AccountLimitsSet,
    CancelReason,
    ContractStateChanged,
    ControlMarket,
    DepositCapacity,
    DepositFunds,
    EventStamp,
    ListingChanged,
    MarketControlRejected,
    MarketControlRequested,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    RejectReason,
    RequestRejected,
    SetAccountLimits,
    TradeExecuted,
    exchange_order_id,
)
from exchange.domain.operators import OperatorSeal
from exchange.domain.risk import RiskStage
from tests.matching.test_stage_wiring import (
    CATALOGUE,
    NEXT_HOUR,
    SEAL,
    SYM,
    Exchange,
    funded,
    operator,
    order,
)

UNLISTED = "H100-80G.GZ.20271202T05"
"""A contract of the grammar that the default catalogue does not list."""


def test_a_forged_operator_command_is_refused_as_not_operator() -> None:
    ex = funded(Exchange())
    unsigned = ControlMarket(operator_id="ops", action="halt", symbol=SYM, reason="try")
    wrong_key = OperatorSeal([b"someone else's key"]).sign(unsigned)
    # A signed command whose content was changed on the way no longer verifies either.
    tampered = operator("halt", reason="drill").model_copy(update={"action": "delist"})
    for forged in (unsigned, wrong_key, tampered):
        out = ex.send(forged)
        assert len(out) == 1
        rejected = out[0]
        assert isinstance(rejected, MarketControlRejected)
        assert rejected.reason == RejectReason.NOT_OPERATOR
    assert ex.market.books[SYM].state == "continuous"
    # A risk stage without a key refuses even a correctly signed command.
    lone = RiskStage(CATALOGUE).handle(operator("halt"), EventStamp("c", 0, 1, 1))
    assert isinstance(lone, MarketControlRejected)
    assert lone.reason == RejectReason.NOT_OPERATOR
    # Ticks come from the clock scheduler and stay unsigned.
    tick = ex.send(ControlMarket(operator_id="clock", action="tick", symbol=SYM))
    assert isinstance(tick[0], MarketControlRequested)


def test_delisting_cancels_resting_orders_and_risk_refuses_new_ones() -> None:
    ex = funded(Exchange())
    ex.send(order("b1", "buyer", "buy", 1700, 4))
    out = ex.send(operator("delist", reason="provider outage"))
    cancelled = [e for e in out if isinstance(e, OrderCancelled)]
    assert [(c.order_id, c.reason) for c in cancelled] == [
        (exchange_order_id("buyer", "b1"), CancelReason.DELISTED)
    ]
    assert [(e.state, e.reason) for e in out if isinstance(e, ContractStateChanged)] == [
        ("closed", "delisted")
    ]
    listing = [e for e in out if isinstance(e, ListingChanged)]
    assert [(e.symbol, e.listed, e.operator_id, e.reason) for e in listing] == [
        (SYM, False, "ops", "provider outage")
    ]
    assert ex.risk.accounts.cash_of("buyer").held == 0
    refused = ex.send(order("b2", "buyer", "buy", 1700, 1))[0]
    assert isinstance(refused, OrderRejected)
    assert refused.reason == RejectReason.CONTRACT_DELISTED
    assert "delisted by ops: provider outage" in refused.message
    # Another hour of the family trades on.
    assert isinstance(
        ex.send(order("b3", "buyer", "buy", 1700, 1, symbol=NEXT_HOUR))[0], OrderAccepted
    )
    ex.check_holds()


def test_an_order_racing_the_delisting_is_cancelled_as_delisted_by_matching() -> None:
    ex = funded(Exchange())
    ex.send(operator("delist"))
    # Accepted by a risk partition that has not yet read the delisting.
    stale = RiskStage(CATALOGUE, SEAL)
    stale.handle(
        DepositFunds(deposit_id="f", account_id="buyer", amount=10_000),
        EventStamp("c", 1, 0, ex.ts),
    )
    accepted = stale.handle(order("late", "buyer", "buy", 1700, 1), EventStamp("c", 1, 1, ex.ts))
    assert isinstance(accepted, OrderAccepted)
    out = ex.market.handle(accepted, EventStamp("o", 0, 999, ex.ts + 1))
    assert [(e.order_id, e.reason) for e in out if isinstance(e, OrderCancelled)] == [
        (exchange_order_id("buyer", "late"), CancelReason.DELISTED)
    ]


def test_listing_reopens_a_delisted_contract_and_lists_one_outside_the_catalogue() -> None:
    ex = funded(Exchange())
    ex.send(operator("delist"))
    out = ex.send(operator("list", reason="provider back"))
    assert [(e.state, e.reason) for e in out if isinstance(e, ContractStateChanged)] == [
        ("continuous", "relisted")
    ]
    assert isinstance(ex.send(order("b1", "buyer", "buy", 1700, 1))[0], OrderAccepted)

    assert isinstance(
        ex.send(order("u0", "buyer", "buy", 1700, 1, symbol=UNLISTED))[0], OrderRejected
    )
    out = ex.send(operator("list", UNLISTED, reason="extra capacity"))
    assert [e.listed for e in out if isinstance(e, ListingChanged)] == [True]
    assert UNLISTED in ex.market.books
    ex.send(DepositCapacity(deposit_id="c-u", account_id="seller", symbol=UNLISTED, quantity=2))
    ex.send(order("u1", "seller", "sell", 1800, 2, symbol=UNLISTED))
    out = ex.send(order("u2", "buyer", "buy", 1800, 2, symbol=UNLISTED))
    assert [t.quantity for t in out if isinstance(t, TradeExecuted)] == [2]
    # Listing what is listed is refused by matching, which knows its books.
    again = ex.send(operator("list", UNLISTED))
    assert [e.reason for e in again if isinstance(e, MarketControlRejected)] == [
        RejectReason.ALREADY_LISTED
    ]


def test_the_whole_market_halts_and_resumes() -> None:
    ex = funded(Exchange())
    out = ex.send(operator("halt_market", "*", reason="exchange-wide incident"))
    halted = {e.symbol for e in out if isinstance(e, ContractStateChanged) and e.state == "halted"}
    assert halted == set(CATALOGUE.symbols)
    ex.send(order("s1", "seller", "sell", 1790, 3))
    out = ex.send(order("b1", "buyer", "buy", 1810, 2))
    assert not [e for e in out if isinstance(e, TradeExecuted)]
    out = ex.send(operator("resume_market", "*"))
    assert [(t.price, t.quantity) for t in out if isinstance(t, TradeExecuted)] == [(1790, 2)]
    assert all(book.state == "continuous" for book in ex.market.books.values())
    wrong = ex.send(operator("halt_market", SYM))[0]
    assert isinstance(wrong, MarketControlRejected)
    ex.check_holds()


def test_a_recorded_market_wide_copy_replays_only_the_contracts_it_names() -> None:
    live = MarketStage(CATALOGUE)
    live.engine.halt(1, NEXT_HOUR)  # already halted: the market-wide halt leaves it out
    request = MarketControlRequested(
        event_id="c:0:1:0", ts=5, operator_id="ops", action="halt_market", symbol="*"
    )
    live.handle(request, EventStamp("o", 0, 1, 5))
    recorded = live.recorded(request, 5)
    assert isinstance(recorded, MarketControlRequested)
    assert recorded.contracts is not None
    assert NEXT_HOUR not in recorded.contracts
    assert SYM in recorded.contracts
    replayed = MarketStage(CATALOGUE)
    replayed.engine.halt(1, NEXT_HOUR)
    replayed.handle(recorded, EventStamp("replay", 0, 1, 5))
    assert replayed.state_hash() == live.state_hash()


def test_a_band_set_on_a_family_applies_to_its_books_and_trades_outside_it_halt() -> None:
    ex = funded(Exchange())
    ex.send(order("s0", "seller", "sell", 1800, 1))
    ex.send(order("b0", "buyer", "buy", 1800, 1))  # reference price 1800
    ex.send(operator("set_band", "H100-80G.GZ", band=50, reason="volatile"))
    assert {b.band for s, b in ex.market.books.items() if s.startswith("H100-80G.GZ.")} == {50}
    assert all(b.band == 0 for s, b in ex.market.books.items() if s.startswith("H100-80G.YRD."))
    assert ex.market.family_bands == {"H100-80G.GZ": 50}
    ex.send(order("s1", "seller", "sell", 1900, 1))
    out = ex.send(order("b1", "buyer", "buy", 1900, 1))
    assert not [e for e in out if isinstance(e, TradeExecuted)]
    assert ("halted", "price_band") in [
        (e.state, e.reason) for e in out if isinstance(e, ContractStateChanged)
    ]
    unknown = ex.send(operator("set_band", "H100-80G.NOWHERE", band=5))[0]
    assert isinstance(unknown, MarketControlRejected)
    assert unknown.reason == RejectReason.UNKNOWN_CONTRACT


def test_account_limits_bound_open_quantity_and_notional_and_need_an_operator() -> None:
    ex = funded(Exchange())
    limits = SetAccountLimits(
        operator_id="ops", account_id="buyer", max_open_quantity=5, max_open_notional=8_000,
        reason="new participant",
    )  # fmt: skip
    forged = ex.send(limits)[0]
    assert isinstance(forged, RequestRejected)
    assert forged.reason == RejectReason.NOT_OPERATOR
    set_ = ex.send(SEAL.sign(limits))[0]
    assert isinstance(set_, AccountLimitsSet)
    assert (set_.operator_id, set_.reason, set_.max_open_quantity) == ("ops", "new participant", 5)
    assert isinstance(ex.send(order("b1", "buyer", "buy", 1000, 4))[0], OrderAccepted)
    over_quantity = ex.send(order("b2", "buyer", "buy", 100, 2))[0]
    assert isinstance(over_quantity, OrderRejected)
    assert over_quantity.reason == RejectReason.ACCOUNT_LIMIT_EXCEEDED
    over_notional = ex.send(order("b3", "buyer", "buy", 4_100, 1))[0]
    assert isinstance(over_notional, OrderRejected)
    assert "8000" in over_notional.message
    assert isinstance(ex.send(order("b4", "buyer", "buy", 4_000, 1))[0], OrderAccepted)
    # Other accounts are not limited; lifting the limits frees the account.
    assert isinstance(ex.send(order("o1", "other", "buy", 1000, 50))[0], OrderAccepted)
    lifted = SetAccountLimits(operator_id="ops", account_id="buyer", reason="reviewed")
    ex.send(SEAL.sign(lifted))
    assert isinstance(ex.send(order("b5", "buyer", "buy", 1000, 50))[0], OrderAccepted)


def test_operator_state_survives_a_snapshot() -> None:
    ex = funded(Exchange())
    ex.send(operator("delist"))
    ex.send(operator("list", UNLISTED))
    ex.send(SEAL.sign(SetAccountLimits(operator_id="ops", account_id="buyer", max_open_quantity=3)))
    restored = RiskStage.restore(CATALOGUE, ex.risk.snapshot(), SEAL)
    assert restored.state_hash() == ex.risk.state_hash()
    assert restored.listed(UNLISTED, ex.ts) is not None
    assert restored.listed(SYM, ex.ts) is None
    market = MarketStage.restore(CATALOGUE, ex.market.snapshot())
    assert market.state_hash() == ex.market.state_hash()
