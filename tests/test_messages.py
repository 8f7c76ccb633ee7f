"""Unit tests of the commands, events and their JSON wire format."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from exchange.domain.messages import (
    AccountLimitsSet,
    AmendOrder,
    AmendRejected,
    AmendRequested,
    ApplicationInfoRequested,
    ApplicationRejected,
    ApplicationSupplemented,
    ApplyForGrant,
    ApproveGrant,
    AuctionCompleted,
    BlockAccepted,
    BookChanged,
    BundleDrawn,
    CancelAllOrders,
    CancelAllRequested,
    CancelOrder,
    CancelReason,
    CancelRejected,
    CancelRequested,
    CapacityDeposited,
    CapacityRecalled,
    CapacityWithdrawn,
    CommandRejected,
    ConcessionGranted,
    ContractStateChanged,
    ControlMarket,
    CreateProgramme,
    DayAheadAuctionCompleted,
    DayAheadBidsCollected,
    DayAheadCleared,
    DeliveryDisputed,
    DeliveryObligation,
    DeliveryRequested,
    DeliverySettled,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    DiscountPoolFunded,
    DisputeDelivery,
    EnterpriseRegistered,
    EventStamp,
    ExclusiveGroupAccepted,
    FeeConceded,
    FundDiscountPool,
    FundsDeposited,
    FundsWithdrawn,
    GrantApplied,
    GrantApproved,
    GrantConcession,
    ListingChanged,
    MarketControlRejected,
    MarketControlRequested,
    Message,
    MeteringReported,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    OrderRejected,
    PlaceBlockOrder,
    PlaceExclusiveGroup,
    PlaceOrder,
    PlatformDiscounted,
    ProgrammeCreated,
    RecallCapacity,
    RegisterEnterprise,
    RejectApplication,
    RejectReason,
    ReportMetering,
    RequestApplicationInfo,
    RequestRejected,
    ResolveDispute,
    SetAccountLimits,
    SetVoucherPolicy,
    StripCascaded,
    StripPosition,
    SupplementApplication,
    TradeExecuted,
    VoucherPolicySet,
    WithdrawCapacity,
    WithdrawFunds,
    decode,
    decode_command,
    decode_event,
    encode,
    event_from_dict,
)

SYM = "H100-80G.GZ.20271201T02"
E = {"event_id": "t:0:7:0", "ts": 1_827_597_600_000}

COMMANDS: list[Message] = [
    PlaceOrder(
        order_id="o-1",
        account_id="a1",
        symbol=SYM,
        side="buy",
        price=12_340,
        quantity=3,
        client_order_id="c.1",
    ),
    PlaceOrder(order_id="o-2", account_id="a1", symbol=SYM, side="sell", price=10, quantity=1),
    CancelOrder(order_id="o-1", account_id="a1"),
    DepositFunds(deposit_id="d:1", account_id="a1", amount=1_000_000),
    DepositCapacity(deposit_id="d_2", account_id="p1", symbol=SYM, quantity=8),
    PlaceOrder(
        order_id="o-3",
        account_id="a1",
        symbol=SYM,
        side="buy",
        price=20_000,
        quantity=8,
        time_in_force="GTD",
        expire_at=1_800_000_000_000,
        order_type="market",
        min_quantity=2,
        all_or_none=True,
        stp_group="group-1",
        stp_mode="decrement",
    ),
    AmendOrder(order_id="o-1", account_id="a1", price=12_350),
    ControlMarket(operator_id="ops", action="halt", symbol=SYM),
    ControlMarket(
        operator_id="ops",
        action="set_band",
        symbol="H100-80G.GZ",
        band=500,
        reason="volatile",
        signature="ab" * 32,
    ),
    SetAccountLimits(
        operator_id="ops",
        account_id="a1",
        max_open_quantity=100,
        reason="new participant",
        signature="cd" * 32,
    ),
    CancelAllOrders(account_id="a1"),
    PlaceExclusiveGroup(
        order_id="need-1", account_id="a1", alternatives=[[SYM], ["H100-80G.NM.20271201T02"]],
        price=1_800, quantity=2, voucher="hz-2027",
    ),
    PlaceBlockOrder(
        order_id="k-1", account_id="a1", symbols=[SYM], side="buy", price=12_000, quantity=8
    ),
    PlaceOrder(
        order_id="o-4",
        account_id="a1",
        symbol=SYM,
        side="buy",
        price=7_000,
        quantity=2,
        voucher="hz-2027",
        limit_basis="net",
    ),
    WithdrawFunds(withdrawal_id="w-1", account_id="a1", amount=500),
    WithdrawCapacity(withdrawal_id="w-2", account_id="p1", symbol=SYM, quantity=2),
    ReportMetering(report_id="m-1", account_id="p1", symbol=SYM, buyer_id="a1", delivered=3),
    DisputeDelivery(
        dispute_id="x-1", account_id="a1", symbol=SYM, provider_id="p1", reason="job failed"
    ),
    ResolveDispute(
        operator_id="ops", symbol=SYM, provider_id="p1", buyer_id="a1", delivered=1, reason="logs"
    ),
    GrantConcession(
        concession_id="sme-2027",
        operator_id="ops",
        account_id="a1",
        discount_bps=5_000,
        budget=100_000,
        valid_from=0,
        valid_until=1_900_000_000_000,
        reason="SME fee relief",
    ),
    RecallCapacity(
        recall_id="r-1", account_id="p1", symbol="H100-80G-INT.GZ.20271201T02", quantity=2
    ),
    CreateProgramme(
        programme_id="hz-2027",
        admin_id="hz-admin",
        issuer="Hangzhou",
        budget=25_000_000_000,
        cap_per_contract=1_000_000,
        cap_per_enterprise=10_000_000,
        regions=["YRD"],
        cities=["hangzhou"],
        valid_from=0,
        valid_until=1_900_000_000_000,
    ),
    ApproveGrant(
        application_id="app-1",
        programme_id="hz-2027",
        admin_id="hz-admin",
        limit=500_000,
        related_accounts=["a1-sister"],
    ),
    FundDiscountPool(
        pool_id="pool-2027",
        operator_id="ops",
        programme_id="hz-2027",
        discount_bps=500,
        budget=5_000_000,
    ),
    RegisterEnterprise(
        account_id="a1", name="杭州算力科技有限公司", uscc="91330100716105852F", kind="sme",
        city="hangzhou",
    ),
    ApplyForGrant(
        application_id="app-1", account_id="a1", programme_id="hz-2027", amount=500_000,
        intended_use="fine-tuning a 7B model for customer service",
    ),
    RequestApplicationInfo(
        application_id="app-1", programme_id="hz-2027", admin_id="hz-admin",
        question="How many GPU hours a month?",
    ),
    SupplementApplication(
        application_id="app-1", programme_id="hz-2027", account_id="a1", answer="About 400.",
    ),
    RejectApplication(
        application_id="app-1", programme_id="hz-2027", admin_id="hz-admin",
        reason="Not registered in Hangzhou.",
    ),
    SetVoucherPolicy(
        operator_id="ops", max_rate_bps=3_000, max_cap_per_enterprise=500_000_000,
        kinds=["sme", "opc"], cities=["hangzhou", "ningbo"], reason="2027 policy",
    ),
]  # fmt: skip

EVENTS: list[Message] = [
    FundsDeposited(**E, deposit_id="d:1", account_id="a1", amount=1_000_000, currency="CNY"),
    CapacityDeposited(**E, deposit_id="d_2", account_id="p1", symbol=SYM, quantity=8),
    DepositRejected(
        **E,
        deposit_id="d:1",
        account_id="a1",
        reason=RejectReason.DUPLICATE_DEPOSIT_ID,
        message="deposit id 'd:1' was used before",
    ),
    OrderAccepted(
        **E,
        order_id="o-1",
        account_id="a1",
        symbol=SYM,
        side="buy",
        price=12_340,
        quantity=3,
        client_order_id="c.1",
    ),
    OrderRejected(
        **E,
        order_id="o-1",
        account_id="a1",
        symbol=SYM,
        side="sell",
        price=12_345,
        quantity=3,
        reason=RejectReason.PRICE_NOT_ON_TICK,
        message="price 12345 is not a multiple of the tick size 10 fen",
    ),
    CancelRequested(**E, order_id="o-1", account_id="a1", symbol=SYM),
    CancelRejected(
        **E,
        order_id="o-9",
        account_id="a1",
        reason=RejectReason.UNKNOWN_ORDER,
        message="account a1 has no open order 'o-9'",
    ),
    OrderCancelled(
        **E,
        order_id="o-1",
        account_id="a1",
        symbol=SYM,
        side="buy",
        remaining=2,
        reason=CancelReason.CONTRACT_NOT_TRADING,
    ),
    TradeExecuted(
        **E,
        trade_id=f"{SYM}:1",
        symbol=SYM,
        price=12_300,
        quantity=1,
        buy_order_id="o-1",
        sell_order_id="o-2",
        buyer_id="a1",
        seller_id="p1",
        aggressor="sell",
    ),
    BookChanged(**E, symbol=SYM, seq=4, bids=[(12_340, 2), (12_300, 0)], asks=[]),
    CommandRejected(
        **E,
        reason=RejectReason.MALFORMED,
        message="price: Input should be a valid integer",
        source="commands:3:41",
    ),
    CancelAllRequested(**E, account_id="a1", symbols=[SYM]),
    BlockAccepted(
        **E,
        order_id="k-1",
        account_id="a1",
        symbol=SYM,
        family="H100-80G.GZ",
        symbols=[SYM],
        side="buy",
        price=12_000,
        quantity=8,
    ),
    AmendRequested(
        **E,
        order_id="o-1",
        account_id="a1",
        symbol=SYM,
        price=12_350,
        quantity=None,
        extra_hold=30,
    ),
    AmendRejected(
        **E,
        order_id="o-1",
        account_id="a1",
        reason=RejectReason.ORDER_NOT_OPEN,
        message="amend of order 'o-1' refused: order_not_open",
        symbol=SYM,
        extra_hold=30,
    ),
    OrderAmended(
        **E,
        order_id="o-1",
        account_id="a1",
        symbol=SYM,
        side="buy",
        price=12_350,
        remaining=3,
        kept_priority=False,
        extra_hold=30,
    ),
    OrderReduced(
        **E,
        order_id="o-1",
        account_id="a1",
        symbol=SYM,
        side="buy",
        quantity=1,
        remaining=2,
        reason=CancelReason.SELF_TRADE,
    ),
    MarketControlRequested(
        **E, operator_id="ops", action="schedule_auction", symbol=SYM, at=5, symbols=[SYM]
    ),
    MarketControlRejected(
        **E,
        operator_id="ops",
        action="halt",
        symbol=SYM,
        reason=RejectReason.NOT_CONTINUOUS,
        message="halt of the contract refused: not_continuous",
    ),
    MarketControlRequested(
        **E, operator_id="ops", action="halt_market", symbol="*", reason="outage", contracts=[SYM]
    ),
    ListingChanged(**E, symbol=SYM, listed=False, operator_id="ops", reason="provider failed"),
    AccountLimitsSet(
        **E,
        operator_id="ops",
        account_id="a1",
        max_open_quantity=None,
        max_open_notional=5_000_000,
        reason="margin call",
    ),
    ContractStateChanged(**E, symbol=SYM, state="halted", reason="price_band"),
    AuctionCompleted(**E, symbol=SYM, price=12_300, volume=6, imbalance=-2),
    FundsWithdrawn(**E, withdrawal_id="w-1", account_id="a1", amount=500),
    CapacityWithdrawn(**E, withdrawal_id="w-2", account_id="p1", symbol=SYM, quantity=2),
    RequestRejected(
        **E,
        request="WithdrawFunds",
        request_id="w-1",
        account_id="a1",
        reason=RejectReason.INSUFFICIENT_FUNDS,
        message="withdrawal of 500 fen exceeds the 0 fen available",
    ),
    DeliveryObligation(
        **E,
        symbol=SYM,
        provider_id="p1",
        buyer_id="a1",
        quantity=3,
        amount=36_900,
        bond=3_690,
        fee=36,
        window_ends=1_827_605_000_000,
    ),
    DeliveryRequested(
        **E,
        action="meter",
        request_id="m-1",
        account_id="p1",
        symbol=SYM,
        provider_id="p1",
        buyer_id="a1",
        delivered=3,
    ),
    ConcessionGranted(
        **E,
        concession_id="sme-2027",
        operator_id="ops",
        account_id="a1",
        discount_bps=5_000,
        budget=100_000,
        valid_from=0,
        valid_until=1_900_000_000_000,
    ),
    FeeConceded(
        **E,
        concession_id="sme-2027",
        account_id="a1",
        fee=12,
        discount=6,
        charged_in="cx.events:0:17:0/buy",
        trade_id="H100-80G.GZ.20271201T00-3",
    ),
    CapacityRecalled(
        **E,
        recall_id="r-1",
        symbol="H100-80G-INT.GZ.20271201T02",
        provider_id="p1",
        quantity=2,
        reason="cooling failure",
    ),
    MeteringReported(
        **E, report_id="m-1", symbol=SYM, provider_id="p1", buyer_id="a1", delivered=3
    ),
    StripCascaded(
        **E,
        symbol="H100-80G.GZ.N20271206",
        hours=["H100-80G.GZ.20271206T00", "H100-80G.GZ.20271206T01"],
        holders=[StripPosition(account_id="a1", units=2)],
        providers=[StripPosition(account_id="p1", units=2, amount=4_000, bond=401, fee=-3)],
        escrow=[2_000, 2_000],
    ),
    DeliveryDisputed(
        **E, dispute_id="x-1", symbol=SYM, provider_id="p1", buyer_id="a1", reason="job failed"
    ),
    DeliverySettled(
        **E,
        symbol=SYM,
        provider_id="p1",
        buyer_id="a1",
        quantity=3,
        delivered=2,
        paid=24_600,
        fee=24,
        refund=12_300,
        bond=3_690,
        penalty=1_230,
    ),
    BundleDrawn(
        **E,
        report_id="m-2",
        symbol="TOK-QWEN.YRD.M202712",
        provider_id="p1",
        buyer_id="a1",
        tokens=700_001,
        used=1_400_002,
        paid=864,
        fee=-1,
    ),
    ProgrammeCreated(
        **E,
        programme_id="hz-2027",
        admin_id="hz-admin",
        issuer="Hangzhou",
        budget=25_000_000_000,
        rate_bps=3_000,
        cap_per_contract=1_000_000,
        cap_per_enterprise=10_000_000,
        classes=[],
        regions=["YRD"],
        kinds=["sme", "opc"],
        cities=["hangzhou"],
        valid_from=0,
        valid_until=1_900_000_000_000,
    ),
    GrantApproved(
        **E,
        application_id="app-1",
        programme_id="hz-2027",
        admin_id="hz-admin",
        account_id="a1",
        limit=500_000,
        kind="sme",
        city="hangzhou",
        related_accounts=["a1-sister"],
        rate_bps=3_000,
        cap_per_contract=1_000_000,
        classes=[],
        regions=["YRD"],
        valid_from=0,
        valid_until=1_900_000_000_000,
        renewed=120_000,
        budget_year=2028,
    ),
    GrantApproved(
        **E,
        application_id="app-2",
        programme_id="hz-2027",
        admin_id="hz-admin",
        account_id="a2",
        limit=300_000,
        kind="opc",
        city="hangzhou",
        related_accounts=[],
        rate_bps=3_000,
        cap_per_contract=1_000_000,
        classes=[],
        regions=["YRD"],
        valid_from=0,
        valid_until=1_900_000_000_000,
        discount_limit=50_000,
        discount_bps=500,
    ),
    DiscountPoolFunded(
        **E,
        pool_id="pool-2027",
        operator_id="ops",
        programme_id="hz-2027",
        discount_bps=500,
        budget=5_000_000,
    ),
    PlatformDiscounted(
        **E,
        programme_id="hz-2027",
        account_id="a2",
        amount=10_000,
        discount=500,
        trade_id="H100-80G.GZ.20271201T00-4",
    ),
    EnterpriseRegistered(
        **E, account_id="a1", name="杭州算力科技有限公司", uscc="91330100716105852F",
        kind="sme", city="hangzhou",
    ),
    GrantApplied(
        **E, application_id="app-1", programme_id="hz-2027", account_id="a1", amount=500_000,
        intended_use="fine-tuning", name="杭州算力科技有限公司", uscc="91330100716105852F",
        kind="sme", city="hangzhou",
    ),
    ApplicationInfoRequested(
        **E, application_id="app-1", programme_id="hz-2027", admin_id="hz-admin",
        account_id="a1", question="How many GPU hours a month?",
    ),
    ApplicationSupplemented(
        **E, application_id="app-1", programme_id="hz-2027", account_id="a1", answer="About 400.",
    ),
    ApplicationRejected(
        **E, application_id="app-1", programme_id="hz-2027", admin_id="hz-admin",
        account_id="a1", reason="Not registered in Hangzhou.",
    ),
    VoucherPolicySet(
        **E, operator_id="ops", max_rate_bps=3_000, max_cap_per_enterprise=500_000_000,
        kinds=["sme", "opc"], cities=[], reason="",
    ),
    ExclusiveGroupAccepted(
        **E, order_id="o-need", account_id="a1",
        blocks=[BlockAccepted(**E, order_id="o-need.1", account_id="a1", symbol=SYM,
                              family="H100-80G.GZ", symbols=[SYM], side="buy", price=1_800,
                              quantity=2, group="o-need")],
    ),
    DayAheadBidsCollected(
        **E, day="2027-12-01", partition=1,
        orders=[{"order_id": "o-1", "side": "buy", "symbols": [SYM], "price": 1_800,
                 "quantity": 2, "seq": 3}], symbols=[SYM],
    ),
    DayAheadCleared(
        **E, day="2027-12-01", partition=1, symbols=[SYM], prices={SYM: 1_750},
        trades=[(SYM, "o-1", "o-2", 2, 1_750)], accepted={"o-1": 2, "o-2": 2},
        rejected={"o-3": "out_of_the_money"},
    ),
    DayAheadAuctionCompleted(
        **E, day="2027-12-01", prices={SYM: 1_750}, volumes={SYM: 2}, welfare=300,
        bound=300, gap_ppm=0, status="optimal", orders=3, accepted=2, solve_ms=12,
        partitions=[0, 1],
    ),
]  # fmt: skip


def _all_message_classes() -> set[type[Message]]:
    found: set[type[Message]] = set()
    pending = list(Message.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "type" in cls.model_fields:
            found.add(cls)
    return found


def _name(message: Message) -> str:
    return type(message).__name__


def test_the_samples_cover_every_message_type() -> None:
    assert {type(m) for m in COMMANDS + EVENTS} == _all_message_classes()
    assert len(_all_message_classes()) == 76


@pytest.mark.parametrize("message", COMMANDS + EVENTS, ids=_name)
def test_every_message_round_trips_byte_identically(message: Message) -> None:
    wire = encode(message)

    decoded = decode(wire)

    assert type(decoded) is type(message)
    assert decoded == message
    assert encode(decoded) == wire


@pytest.mark.parametrize("message", EVENTS, ids=_name)
def test_events_decode_as_events_and_from_stored_dicts(message: Message) -> None:
    wire = encode(message)

    assert decode_event(wire) == message
    assert event_from_dict(json.loads(wire)) == message
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        decode_command(wire)


@pytest.mark.parametrize("message", COMMANDS, ids=_name)
def test_commands_decode_as_commands_only(message: Message) -> None:
    wire = encode(message)

    assert decode_command(wire) == message
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        decode_event(wire)


def test_wire_form_is_compact_json_in_declaration_order() -> None:
    order = PlaceOrder(order_id="o", account_id="a", symbol="S", side="buy", price=1, quantity=2)

    assert encode(order) == (
        b'{"v":1,"type":"PlaceOrder","order_id":"o","account_id":"a","symbol":"S",'
        b'"side":"buy","price":1,"quantity":2,"client_order_id":null}'
    )


def test_an_expiry_on_a_gtc_order_still_decodes_as_it_was_written() -> None:
    # Risk refuses such a command now (`expiry_needs_gtd`), but a Kafka client could send one
    # before, and its acceptance is in stored histories: both decode and re-encode unchanged.
    command = (
        b'{"v":1,"type":"PlaceOrder","order_id":"o","account_id":"a","symbol":"S",'
        b'"side":"buy","price":1,"quantity":2,"client_order_id":null,"expire_at":9}'
    )
    accepted = (
        b'{"v":1,"event_id":"e","ts":5,"type":"OrderAccepted","order_id":"o","account_id":"a",'
        b'"symbol":"S","side":"buy","price":1,"quantity":2,"client_order_id":null,'
        b'"expire_at":9}'
    )

    order = decode_command(command)
    assert isinstance(order, PlaceOrder)
    assert (order.time_in_force, order.expire_at) == ("GTC", 9)
    assert encode(order) == command
    event = decode_event(accepted)
    assert isinstance(event, OrderAccepted)
    assert (event.time_in_force, event.expire_at) == ("GTC", 9)
    assert encode(event) == accepted


def test_a_block_without_a_voucher_or_bond_keeps_the_bytes_blocks_had_before_them() -> None:
    block = PlaceBlockOrder(
        order_id="b", account_id="a", symbols=["S0", "S1"], side="buy", price=10, quantity=2
    )
    accepted = BlockAccepted(
        event_id="e", ts=5, order_id="a/b", account_id="a", symbol="S0", family="F",
        symbols=["S0", "S1"], side="sell", price=10, quantity=2,
    )  # fmt: skip

    assert encode(block) == (
        b'{"v":1,"type":"PlaceBlockOrder","order_id":"b","account_id":"a","symbols":["S0","S1"],'
        b'"side":"buy","price":10,"quantity":2,"stp_group":null,"stp_mode":"cancel_resting"}'
    )
    assert encode(accepted) == (
        b'{"v":1,"event_id":"e","ts":5,"type":"BlockAccepted","order_id":"a/b","account_id":"a",'
        b'"symbol":"S0","family":"F","symbols":["S0","S1"],"side":"sell","price":10,'
        b'"quantity":2,"stp_group":null,"stp_mode":"cancel_resting"}'
    )
    with_terms = accepted.model_copy(
        update={"side": "buy", "voucher": "p", "voucher_reserved": 6, "voucher_rate_bps": 3000}
    )
    assert decode(encode(with_terms)) == with_terms
    assert b'"voucher":"p","voucher_reserved":6,"voucher_rate_bps":3000}' in encode(with_terms)


def test_a_bundle_obligation_says_where_its_units_came_from_an_hour_s_keeps_its_bytes() -> None:
    hour = DeliveryObligation(
        event_id="e", ts=5, symbol="S", provider_id="p", buyer_id="b", quantity=2, amount=800,
        bond=80, fee=-1, window_ends=9,
    )  # fmt: skip
    stored = (
        b'{"v":1,"event_id":"e","ts":5,"type":"DeliveryObligation","symbol":"S",'
        b'"provider_id":"p","buyer_id":"b","quantity":2,"amount":800,"bond":80,"fee":-1,'
        b'"window_ends":9}'
    )
    # An hour's obligation, and any stored before the field: the same bytes, read as None.
    assert encode(hour) == stored
    assert decode_event(stored) == hour
    assert hour.moved_from is None
    for moved_from in ("h", ""):
        bundle = hour.model_copy(update={"moved_from": moved_from})
        wire = encode(bundle)
        assert wire == stored[:-1] + f',"moved_from":"{moved_from}"}}'.encode()
        assert decode_event(wire) == bundle


def test_a_group_without_its_own_prices_keeps_its_bytes_and_bad_prices_are_refused() -> None:
    group = PlaceExclusiveGroup(
        order_id="g", account_id="a", alternatives=[["S0"], ["S1"]], price=10, quantity=2
    )
    assert encode(group) == (
        b'{"v":1,"type":"PlaceExclusiveGroup","order_id":"g","account_id":"a",'
        b'"alternatives":[["S0"],["S1"]],"price":10,"quantity":2,"voucher":null}'
    )
    priced = group.model_copy(update={"prices": [10, 7]})
    assert decode(encode(priced)) == priced
    assert [priced.limit_of(n) for n in (0, 1)] == [10, 7]
    for prices, says in (([10], "one per alternative, 2, not 1"), ([10, 11], "none above")):
        wire = encode(group)[:-1] + b',"prices":' + str(prices).replace(" ", "").encode() + b"}"
        with pytest.raises(ValidationError, match=says):
            decode(wire)


def test_book_changed_levels_decode_as_integer_pairs() -> None:
    decoded = decode(
        b'{"v":1,"type":"BookChanged","event_id":"e","ts":5,"symbol":"S",'
        b'"seq":1,"bids":[[100,3]],"asks":[[110,0]]}'
    )

    assert isinstance(decoded, BookChanged)
    assert decoded.bids == [(100, 3)]
    assert decoded.asks == [(110, 0)]


def _place(**changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "type": "PlaceOrder",
        "order_id": "o1",
        "account_id": "a1",
        "symbol": SYM,
        "side": "buy",
        "price": 100,
        "quantity": 1,
    }
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("wire", "loc", "error_type"),
    [
        (_place(price=1.5), ("PlaceOrder", "price"), "int_type"),
        (_place(price=1.0), ("PlaceOrder", "price"), "int_type"),
        (_place(price="10"), ("PlaceOrder", "price"), "int_type"),
        (_place(price=True), ("PlaceOrder", "price"), "int_type"),
        (_place(quantity=-1), ("PlaceOrder", "quantity"), "greater_than"),
        (_place(quantity=0), ("PlaceOrder", "quantity"), "greater_than"),
        (_place(quantity=10**15 + 1), ("PlaceOrder", "quantity"), "less_than_equal"),
        (_place(price=...), ("PlaceOrder", "price"), "missing"),
        (_place(leverage=10), ("PlaceOrder", "leverage"), "extra_forbidden"),
        (_place(order_id="o 1"), ("PlaceOrder", "order_id"), "string_pattern_mismatch"),
        (_place(account_id="a/1"), ("PlaceOrder", "account_id"), "string_pattern_mismatch"),
        (_place(order_id=""), ("PlaceOrder", "order_id"), "string_too_short"),
        (_place(order_id="x" * 65), ("PlaceOrder", "order_id"), "string_too_long"),
        (_place(side="short"), ("PlaceOrder", "side"), "literal_error"),
        (_place(v=2), ("PlaceOrder", "v"), "literal_error"),
    ],
    ids=[
        "float-price",
        "integral-float-price",
        "string-price",
        "bool-price",
        "negative-quantity",
        "zero-quantity",
        "huge-quantity",
        "missing-price",
        "extra-field",
        "space-in-order-id",
        "slash-in-account-id",
        "empty-order-id",
        "long-order-id",
        "unknown-side",
        "version-2",
    ],
)
def test_decode_names_the_offending_field(
    wire: bytes, loc: tuple[str, ...], error_type: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        decode(wire)

    errors = caught.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, error_type)]


def test_decode_rejects_an_unknown_type_naming_the_tag() -> None:
    with pytest.raises(ValidationError) as caught:
        decode(_place(type="ModifyOrder"))

    (error,) = caught.value.errors()
    assert error["type"] == "union_tag_invalid"
    assert "Input tag 'ModifyOrder' found using 'type'" in error["msg"]


def test_decode_rejects_a_record_without_type() -> None:
    with pytest.raises(ValidationError) as caught:
        decode(b'{"order_id":"o1","account_id":"a1"}')

    (error,) = caught.value.errors()
    assert error["type"] == "union_tag_not_found"
    assert "'type'" in error["msg"]


def test_decode_rejects_invalid_json() -> None:
    with pytest.raises(ValidationError, match="json_invalid"):
        decode(b'{"type":"PlaceOrder",')


def test_event_fields_are_strict_integers() -> None:
    wire = encode(EVENTS[0]).replace(b'"amount":1000000', b'"amount":"1000000"')

    with pytest.raises(ValidationError) as caught:
        decode(wire)

    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [
        (("FundsDeposited", "amount"), "int_type")
    ]


@pytest.mark.parametrize("message", COMMANDS + EVENTS, ids=_name)
def test_messages_are_frozen(message: Message) -> None:
    with pytest.raises(ValidationError, match="frozen_instance"):
        message.v = 1  # type: ignore[misc]


def test_frozen_order_keeps_its_price() -> None:
    order = COMMANDS[0]
    assert isinstance(order, PlaceOrder)

    with pytest.raises(ValidationError, match="Instance is frozen"):
        order.price = 1  # type: ignore[misc]

    assert order.price == 12_340


def test_event_stamp_ids_are_topic_partition_offset_n_and_increase() -> None:
    stamp = EventStamp("t", 0, 41, 1_827_597_600_000)

    ids = [stamp.next_id() for _ in range(12)]

    assert ids[:3] == ["t:0:41:0", "t:0:41:1", "t:0:41:2"]
    assert ids[-1] == "t:0:41:11"
    counters = [int(i.rsplit(":", 1)[1]) for i in ids]
    assert counters == list(range(12))
    assert stamp.ts == 1_827_597_600_000


def test_event_stamps_of_the_same_record_give_the_same_ids() -> None:
    first, again = EventStamp("orders", 3, 9, 5), EventStamp("orders", 3, 9, 5)
    other = EventStamp("orders", 3, 10, 5)

    assert [first.next_id(), first.next_id()] == [again.next_id(), again.next_id()]
    assert other.next_id() == "orders:3:10:0"
