"""The compute bank's money rules end to end through risk, matching and a settlement ledger.

A loop stands in for the log (as in tests/matching/test_stage_wiring.py): commands go through
the risk stage, what it approves through the matching stage (whose delivery desk keeps the
obligations), and what matching feeds back returns to risk. A journaling `Accounts` folds every
event as settlement does. Amounts are checked to the fen.
"""

from __future__ import annotations

import hashlib
from typing import Any, get_args

from exchange.domain.accounts import Accounts, Balance
from exchange.domain.catalogue import (
    ListingRule,
    MarketRules,
    default_catalogue,
    parse_symbol,
    to_utc_ms,
)
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    AmendOrder,
    AmendRejected,
    CancelOrder,
    CapacityRecalled,
    Command,
    ConcessionGranted,
    ControlMarket,
    DeliveryObligation,
    DeliverySettled,
    DepositCapacity,
    DepositFunds,
    DisputeDelivery,
    Event,
    EventStamp,
    FeeConceded,
    GrantConcession,
    MeteringReported,
    OrderAccepted,
    OrderAmended,
    OrderRejected,
    PlaceOrder,
    RecallCapacity,
    RejectReason,
    ReportMetering,
    RequestRejected,
    ResolveDispute,
    Side,
    TradeExecuted,
    WithdrawCapacity,
    WithdrawFunds,
)
from exchange.domain.operators import OperatorCommand, OperatorSeal
from exchange.domain.risk import OUTCOME_TYPES, RiskStage

SYM = "H100-80G.GZ.20271201T00"
INT = "H100-80G-INT.GZ.20271201T00"
DELIVERY = to_utc_ms(parse_symbol(SYM).delivery_start)
HOUR = 3_600_000
RULES = MarketRules(bond_bps=1_000, fees=(("H100-80G", -10, 20),), delivery_window_ms=2 * HOUR)


SEAL = OperatorSeal([b"the bank tests' operator key"])


def sealed(command: Command) -> Command:
    """The command as the API sends it: operators' and administrators' commands signed."""
    if isinstance(command, get_args(OperatorCommand)):
        return SEAL.sign(command)
    return command


class Bank:
    """Risk, matching and a settlement-style journal, in one process, in log order."""

    def __init__(self, rules: MarketRules = RULES) -> None:
        catalogue = default_catalogue(rules, [ListingRule((INT.rsplit(".", 1)[0],), 2)])
        self.risk = RiskStage(catalogue, SEAL)
        self.market = MarketStage(catalogue)
        self.ledger = Accounts(rules, journal=True)
        self.offset = 0
        self.ts = DELIVERY - 10 * HOUR
        self.events: list[Event] = []

    def send(self, command: Command, at: int | None = None) -> list[Event]:
        command = sealed(command)
        self.ts = self.ts + 1 if at is None else at
        self.offset += 1
        decided = self.risk.handle(command, EventStamp("c", 0, self.offset, self.ts))
        out = [decided, *self.market.handle(decided, EventStamp("o", 0, self.offset, self.ts))]
        fed_back = EventStamp("f", 0, self.offset, self.ts)
        for event in list(out):
            self.ledger.apply(event)
            if isinstance(event, OUTCOME_TYPES) and event.event_id.startswith("o:"):
                for conceded in self.risk.apply_outcome(event, lambda _: True, fed_back):
                    self.ledger.apply(conceded)
                    out.append(conceded)
        self.events.extend(out)
        return out

    def tick(self, at: int) -> list[Event]:
        return self.send(ControlMarket(operator_id="clock", action="tick", symbol=SYM), at)

    def cash(self, account: str) -> int:
        balance = self.ledger.cash.get(account, Balance())
        assert self.risk.accounts.cash.get(account, Balance()) == balance, account
        return balance.available + balance.held

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def order(order_id: str, account: str, side: Side, price: int, quantity: int) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id, account_id=account, symbol=SYM, side=side, price=price,
        quantity=quantity,
    )  # fmt: skip


def funds(account: str, amount: int) -> DepositFunds:
    return DepositFunds(deposit_id=f"f-{account}-{amount}", account_id=account, amount=amount)


def test_deposit_trade_resell_and_deliver_with_a_shortfall_settle_to_the_fen() -> None:
    bank = Bank()
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=10))
    bank.send(funds("b1", 100_000))
    bank.send(funds("b2", 10_000))

    ask = bank.send(order("s1", "p1", "sell", 1_000, 10))[0]
    # The bond: 10% of the limit price per unit, held from the provider's cash.
    assert isinstance(ask, OrderAccepted)
    assert (ask.backing, ask.bond_per_unit) == ("capacity", 100)
    assert bank.ledger.cash["p1"] == Balance(available=9_000, held=1_000)

    bank.send(order("b1", "b1", "buy", 1_000, 6))
    # The buyer pays 6,000 into escrow and a 0.2% taker fee of 12; the provider is paid at
    # delivery; its bond behind the 6 units sold is posted.
    assert bank.ledger.cash["b1"] == Balance(available=100_000 - 6_012, held=0)
    assert bank.ledger.ledger[f"escrow:{SYM}"] == 6_000
    assert bank.ledger.ledger["bond:p1"] == 600
    assert bank.ledger.cash["p1"] == Balance(available=9_000, held=400)

    bank.send(CancelOrder(order_id="s1", account_id="p1"))
    assert bank.ledger.cash["p1"] == Balance(available=9_400, held=0)

    resale = bank.send(order("r1", "b1", "sell", 1_100, 2))[0]
    assert isinstance(resale, OrderAccepted)
    assert resale.backing == "entitlement"
    bank.send(order("b2", "b2", "buy", 1_100, 2))
    # The reseller is paid at once out of escrow, with a 0.1% maker rebate of 2.
    assert bank.cash("b1") == 100_000 - 6_012 + 2_200 + 2
    assert bank.cash("b2") == 10_000 - 2_204
    assert bank.ledger.positions == {("b1", SYM): 4, ("b2", SYM): 2}

    delivered = bank.tick(DELIVERY)
    obligations = [e for e in delivered if isinstance(e, DeliveryObligation)]
    assert [(o.buyer_id, o.quantity, o.amount, o.bond, o.fee) for o in obligations] == [
        ("b1", 4, 4_000, 400, -4),
        ("b2", 2, 2_000, 200, -2),
    ]
    bank.send(
        ReportMetering(report_id="m1", account_id="p1", symbol=SYM, buyer_id="b1", delivered=4)
    )
    bank.send(
        ReportMetering(report_id="m2", account_id="p1", symbol=SYM, buyer_id="b2", delivered=1)
    )
    settled = [e for e in bank.tick(DELIVERY + 3 * HOUR + 1) if isinstance(e, DeliverySettled)]
    assert [(s.buyer_id, s.paid, s.fee, s.refund, s.penalty) for s in settled] == [
        ("b1", 4_000, -4, 0, 0),
        ("b2", 1_000, -1, 1_000, 100),
    ]
    # The provider: paid 5,000 and rebated 5 for what it delivered, its bond back less the
    # 100 penalty; the short buyer: half its escrow back and the penalty.
    assert bank.cash("p1") == 10_000 + 4_000 + 4 + 1_000 + 1 - 100
    assert bank.cash("b2") == 10_000 - 2_204 + 1_000 + 100
    assert bank.cash("b1") == 100_000 - 6_012 + 2_202
    assert bank.ledger.ledger.get(f"escrow:{SYM}", 0) == 0
    assert bank.ledger.ledger.get("bond:p1", 0) == 0
    assert (bank.ledger.ledger["fees"], bank.ledger.ledger["rebates"]) == (16, -7)
    assert bank.ledger.positions == {("b1", SYM): 0, ("b2", SYM): 0}
    assert bank.ledger.trial_balance() == 0
    assert all(sum(a for _, a in entry.legs) == 0 for entry in bank.ledger.journal or [])


def _refused(events: list[Event]) -> RequestRejected:
    (refused,) = [e for e in events if isinstance(e, RequestRejected)]
    return refused


def test_a_withdrawal_never_touches_held_cash() -> None:
    bank = Bank()
    bank.send(funds("b1", 5_000))
    bank.send(order("b1", "b1", "buy", 1_000, 4))
    before = bank.risk.state_hash()

    refused = _refused(bank.send(WithdrawFunds(withdrawal_id="w1", account_id="b1", amount=1_000)))

    assert refused.reason == RejectReason.INSUFFICIENT_FUNDS
    assert refused.message == (
        "withdrawal of 1000 fen exceeds the 992 fen available "
        "(another 4008 fen is held for open orders and cannot be withdrawn)"
    )
    assert bank.risk.state_hash() == before
    bank.send(WithdrawFunds(withdrawal_id="w2", account_id="b1", amount=992))
    assert bank.ledger.cash["b1"] == Balance(available=0, held=4_008)
    assert bank.ledger.ledger["external"] == -5_000 + 992
    again = _refused(bank.send(WithdrawFunds(withdrawal_id="w2", account_id="b1", amount=1)))
    assert again.reason == RejectReason.DUPLICATE_ID


def test_unsold_capacity_can_be_withdrawn_until_gate_closure() -> None:
    bank = Bank()
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=8))
    bank.send(order("s1", "p1", "sell", 1_000, 5))

    too_much = _refused(
        bank.send(WithdrawCapacity(withdrawal_id="w1", account_id="p1", symbol=SYM, quantity=4))
    )
    assert too_much.reason == RejectReason.INSUFFICIENT_CAPACITY
    bank.send(WithdrawCapacity(withdrawal_id="w2", account_id="p1", symbol=SYM, quantity=3))
    assert bank.ledger.capacity[("p1", SYM)] == Balance(available=0, held=5)

    bank.send(CancelOrder(order_id="s1", account_id="p1"))
    late = _refused(
        bank.send(
            WithdrawCapacity(withdrawal_id="w3", account_id="p1", symbol=SYM, quantity=1),
            at=DELIVERY - HOUR,
        )
    )
    assert late.reason == RejectReason.GATE_CLOSED


def test_reselling_what_you_do_not_hold_is_refused_and_changes_nothing() -> None:
    bank = Bank()
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=3))
    bank.send(funds("b1", 10_000))
    bank.send(order("s1", "p1", "sell", 1_000, 3))
    bank.send(order("b1", "b1", "buy", 1_000, 2))
    before = bank.risk.state_hash()

    refused = bank.send(order("r1", "b1", "sell", 1_200, 3))[0]

    assert isinstance(refused, OrderRejected)
    assert refused.reason == RejectReason.INSUFFICIENT_CAPACITY
    assert "0 available of deposited capacity and 2 of entitlements to resell" in refused.message
    assert bank.risk.state_hash() == before


def test_a_bonded_sell_cannot_be_amended_above_the_price_its_bond_covers() -> None:
    """A sell at 0.10 bonds 1 fen a unit (10%). Amended to 20.00 it would sell behind a
    1-fen bond what needs 200 fen: risk refuses, and the order, its price and its bond stay."""
    bank = Bank()
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=4))
    bank.send(funds("b1", 10_000))
    ask = bank.send(order("s1", "p1", "sell", 10, 4).model_copy(update={"post_only": True}))[0]
    assert isinstance(ask, OrderAccepted)
    assert ask.bond_per_unit == 1
    assert bank.ledger.cash["p1"] == Balance(available=10_000 - 4, held=4)
    before = bank.risk.state_hash()

    out = bank.send(AmendOrder(order_id="s1", account_id="p1", price=2_000))

    (refused,) = out
    assert isinstance(refused, AmendRejected)
    assert refused.reason == RejectReason.AMEND_ABOVE_BOND
    assert refused.message == (
        "有交付保证金的卖单改价不能高于保证金所保的 10 分: 请撤单后按新价格重新下单 "
        "a bonded sell's delivery bond of 1 fen a unit covers prices up to 10 fen, and 2000 "
        "fen needs 200 fen a unit: cancel and place a new order at the new price"
    )
    assert bank.risk.state_hash() == before
    assert bank.ledger.cash["p1"] == Balance(available=10_000 - 4, held=4)
    assert bank.risk.accounts.open_orders[ask.order_id].price == 10

    # A buyer willing to pay 20.00 buys at the ask's own 0.10, behind 1 fen a unit.
    bank.send(order("b1", "b1", "buy", 2_000, 3))
    assert [(t.price, t.quantity) for t in bank.of(TradeExecuted)] == [(10, 3)]
    assert bank.ledger.ledger["bond:p1"] == 3
    assert bank.ledger.cash["p1"] == Balance(available=10_000 - 4, held=1)


def test_a_bonded_sell_amended_down_may_come_back_up_to_what_its_bond_covers() -> None:
    """The bond of a sell at 10.00 (100 fen a unit) stays when it is amended down to 5.00, so
    it may be raised again to 10.00, but not one tick past."""
    bank = Bank()
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=4))
    bank.send(order("s1", "p1", "sell", 1_000, 4))
    assert bank.ledger.cash["p1"] == Balance(available=9_600, held=400)

    for price in (500, 1_000):
        (amended,) = [
            e
            for e in bank.send(AmendOrder(order_id="s1", account_id="p1", price=price))
            if isinstance(e, OrderAmended)
        ]
        assert (amended.price, amended.remaining) == (price, 4)
        assert bank.ledger.cash["p1"] == Balance(available=9_600, held=400)

    (refused,) = bank.send(AmendOrder(order_id="s1", account_id="p1", price=1_010, quantity=2))
    assert isinstance(refused, AmendRejected)
    assert refused.reason == RejectReason.AMEND_ABOVE_BOND
    assert "covers prices up to 1000 fen, and 1010 fen needs 101 fen a unit" in refused.message
    assert bank.ledger.cash["p1"] == Balance(available=9_600, held=400)
    (kept,) = bank.risk.accounts.open_orders.values()
    assert (kept.price, kept.remaining, kept.bond_per_unit) == (1_000, 4, 100)


def _delivered_bank() -> Bank:
    bank = Bank()
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=4))
    bank.send(funds("b1", 10_000))
    bank.send(order("s1", "p1", "sell", 1_000, 4))
    bank.send(order("b1", "b1", "buy", 1_000, 4))
    bank.tick(DELIVERY)
    return bank


def test_metering_more_than_was_sold_is_refused() -> None:
    bank = _delivered_bank()
    before = bank.market.delivery.snapshot()

    refused = _refused(
        bank.send(
            ReportMetering(report_id="m1", account_id="p1", symbol=SYM, buyer_id="b1", delivered=5)
        )
    )

    assert refused.reason == RejectReason.METERING_EXCEEDS_OBLIGATION
    assert refused.message == f"5 units delivered is more than the 4 p1 sold to b1 in {SYM}"
    assert bank.market.delivery.snapshot() == before
    nobody = _refused(
        bank.send(
            ReportMetering(report_id="m2", account_id="p1", symbol=SYM, buyer_id="b9", delivered=1)
        )
    )
    assert nobody.reason == RejectReason.NO_OBLIGATION


def test_unreported_delivery_refunds_everything_and_takes_the_whole_bond() -> None:
    bank = _delivered_bank()

    bank.tick(DELIVERY + 3 * HOUR + 1)

    (settled,) = bank.of(DeliverySettled)
    assert (settled.delivered, settled.paid, settled.refund, settled.penalty) == (0, 0, 4_000, 400)
    assert bank.cash("b1") == 10_000 - 4_008 + 4_000 + 400
    assert bank.cash("p1") == 10_000 - 400


def test_a_disputed_delivery_waits_for_an_operator() -> None:
    bank = _delivered_bank()
    bank.send(
        ReportMetering(report_id="m1", account_id="p1", symbol=SYM, buyer_id="b1", delivered=4)
    )
    disputed = bank.send(
        DisputeDelivery(
            dispute_id="d1", account_id="b1", symbol=SYM, provider_id="p1", reason="job died"
        )
    )
    assert disputed[0].type == "DeliveryRequested"

    assert not [e for e in bank.tick(DELIVERY + 4 * HOUR) if isinstance(e, DeliverySettled)]
    late = _refused(
        bank.send(
            ReportMetering(report_id="m2", account_id="p1", symbol=SYM, buyer_id="b1", delivered=4)
        )
    )
    assert late.reason == RejectReason.DELIVERY_WINDOW_CLOSED
    too_much = ResolveDispute(
        operator_id="ops", symbol=SYM, provider_id="p1", buyer_id="b1", delivered=9, reason="?"
    )
    assert _refused(bank.send(too_much)).reason == RejectReason.METERING_EXCEEDS_OBLIGATION
    resolved = bank.send(
        ResolveDispute(
            operator_id="ops",
            symbol=SYM,
            provider_id="p1",
            buyer_id="b1",
            delivered=3,
            reason="logs show 3 card-hours",
        )
    )
    (settled,) = [e for e in resolved if isinstance(e, DeliverySettled)]
    assert (settled.delivered, settled.refund, settled.penalty, settled.resolved_by) == (
        3,
        1_000,
        100,
        "ops",
    )
    assert bank.of(MeteringReported)[0].delivered == 4


def test_a_recall_refunds_and_compensates_the_holders_from_the_bond() -> None:
    bank = Bank()
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=INT, quantity=5))
    bank.send(funds("b1", 10_000))
    bank.send(funds("b2", 10_000))
    bank.send(PlaceOrder(order_id="s1", account_id="p1", symbol=INT, side="sell", price=600,
                         quantity=5))  # fmt: skip
    for buyer, quantity in (("b1", 2), ("b2", 3)):
        bank.send(PlaceOrder(order_id=f"o-{buyer}", account_id=buyer, symbol=INT, side="buy",
                             price=600, quantity=quantity))  # fmt: skip
    firm = _refused(
        bank.send(RecallCapacity(recall_id="r0", account_id="p1", symbol=SYM, quantity=1))
    )
    assert firm.reason == RejectReason.NOT_RECALLABLE
    too_many = _refused(
        bank.send(RecallCapacity(recall_id="r1", account_id="p1", symbol=INT, quantity=6))
    )
    assert (too_many.reason, too_many.message) == (
        RejectReason.RECALL_EXCEEDS_SOLD,
        f"召回 6 卡时超过 p1 已售出的 5 卡时 {INT} a recall of 6 units exceeds the 5 units of "
        f"{INT} p1 sold",
    )

    recalled = bank.send(
        RecallCapacity(recall_id="r2", account_id="p1", symbol=INT, quantity=3, reason="outage")
    )

    settled = [e for e in recalled if isinstance(e, DeliverySettled)]
    # In account order: b1's 2 units, then 1 of b2's; each refunded 600 a unit and
    # compensated 10% of that from the 60-a-unit bond.
    assert [(s.buyer_id, s.quantity, s.refund, s.bond, s.penalty) for s in settled] == [
        ("b1", 2, 1_200, 120, 120),
        ("b2", 1, 600, 60, 60),
    ]
    assert bank.cash("b1") == 10_000 + 120
    assert bank.cash("b2") == 10_000 - 1_800 + 600 + 60
    assert bank.ledger.positions == {("b1", INT): 0, ("b2", INT): 2}
    assert bank.ledger.ledger["bond:p1"] == 120
    assert bank.ledger.ledger[f"escrow:{INT}"] == 1_200
    again = _refused(
        bank.send(RecallCapacity(recall_id="r2", account_id="p1", symbol=INT, quantity=1))
    )
    assert again.reason == RejectReason.DUPLICATE_ID
    late = _refused(
        bank.send(
            RecallCapacity(recall_id="r3", account_id="p1", symbol=INT, quantity=1),
            at=DELIVERY - HOUR,
        )
    )
    assert late.reason == RejectReason.GATE_CLOSED


def test_a_recall_refusal_tells_units_only_offered_for_sale_from_units_sold() -> None:
    """Units a provider only offers (its capacity's ask, not bought) and units its buyers offer
    for resale are no units a recall takes: the refusal says which it met, Chinese first."""
    bank = Bank()
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=INT, quantity=5))
    bank.send(funds("b1", 10_000))
    bank.send(PlaceOrder(order_id="s1", account_id="p1", symbol=INT, side="sell", price=600,
                         quantity=5))  # fmt: skip
    nothing_sold = _refused(
        bank.send(RecallCapacity(recall_id="r0", account_id="p1", symbol=INT, quantity=1))
    )
    assert (nothing_sold.reason, nothing_sold.message) == (
        RejectReason.RECALL_EXCEEDS_SOLD,
        f"召回 1 卡时超过 p1 已售出的 0 卡时 {INT}, 另有 5 卡时挂单待售、尚未售出, 不能召回: "
        f"请撤单后提取 a recall of 1 units exceeds the 0 units of {INT} p1 sold; its 5 units "
        "offered for sale and not sold are not recalled: cancel the sell order and withdraw them",
    )
    bank.send(PlaceOrder(order_id="o-b1", account_id="b1", symbol=INT, side="buy", price=600,
                         quantity=2))  # fmt: skip
    partly_sold = _refused(
        bank.send(RecallCapacity(recall_id="r1", account_id="p1", symbol=INT, quantity=3))
    )
    assert partly_sold.message.startswith(f"召回 3 卡时超过 p1 已售出的 2 卡时 {INT}, 另有 3 卡时")
    assert "its 3 units offered for sale and not sold are not recalled" in partly_sold.message
    # The buyer offers one of its two units for resale: only the other can be recalled.
    bank.send(PlaceOrder(order_id="r-b1", account_id="b1", symbol=INT, side="sell", price=900,
                         quantity=1))  # fmt: skip
    resold = _refused(
        bank.send(RecallCapacity(recall_id="r2", account_id="p1", symbol=INT, quantity=2))
    )
    assert (resold.reason, resold.message) == (
        RejectReason.RECALL_EXCEEDS_SOLD,
        f"{INT} 已售出的 2 卡时中只有 1 卡时仍由买方持有且未挂出转售, 本次最多召回这些 of the 2 "
        f"units of {INT} sold, only 1 are held and not offered for resale: recall at most that "
        "many now",
    )
    recalled = bank.send(RecallCapacity(recall_id="r3", account_id="p1", symbol=INT, quantity=1))
    assert [e.quantity for e in recalled if isinstance(e, CapacityRecalled)] == [1]


def test_a_fee_concession_pays_back_its_share_of_fees_until_its_budget_runs_out() -> None:
    bank = Bank()
    bank.send(
        GrantConcession(
            concession_id="sme-relief", operator_id="ops", account_id="b1", discount_bps=5_000,
            budget=10, valid_from=0, valid_until=DELIVERY, reason="SME fee relief",
        )
    )  # fmt: skip
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=10))
    bank.send(funds("b1", 100_000))
    bank.send(order("s1", "p1", "sell", 1_000, 10))

    bank.send(order("b1", "b1", "buy", 1_000, 6))  # taker fee 12: half back, 6
    bank.send(order("b2", "b1", "buy", 1_000, 4))  # fee 8: half is 4, the budget has 4 left

    assert bank.cash("b1") == 100_000 - 6_012 + 6 - 4_008 + 4
    assert bank.ledger.ledger["fees"] == 20
    assert bank.ledger.ledger["platform"] == -10
    assert bank.ledger.ledger.get("concession:sme-relief:b1", 0) == 0
    assert bank.ledger.trial_balance() == 0
    conceded = bank.of(FeeConceded)
    assert [(c.fee, c.discount, c.charged_in.endswith("/buy")) for c in conceded] == [
        (12, 6, True),
        (8, 4, True),
    ]


def test_settlement_spends_a_concession_as_risk_did_whichever_partition_it_reads_first() -> None:
    # The concession and the discounts risk decided travel on the buyer's partition, the
    # trades on their contracts'. Settlement reading all the trades first, and the other
    # partition after, must end where risk's order of events ends.
    bank = Bank()
    bank.send(
        GrantConcession(
            concession_id="relief", operator_id="ops", account_id="b1", discount_bps=5_000,
            budget=10, valid_from=0, valid_until=DELIVERY,
        )
    )  # fmt: skip
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=10))
    bank.send(funds("b1", 100_000))
    bank.send(order("s1", "p1", "sell", 1_000, 10))
    bank.send(order("b1", "b1", "buy", 1_000, 6))
    bank.send(order("b2", "b1", "buy", 1_000, 4))
    account_partition = (ConcessionGranted, FeeConceded)
    late = [e for e in bank.events if isinstance(e, account_partition)]
    early = [e for e in bank.events if not isinstance(e, account_partition)]

    assert _digest(early + late) == _digest(bank.events)
    assert bank.cash("b1") == 100_000 - 6_012 + 6 - 4_008 + 4


def _digest(events: list[Event]) -> str:
    ledger = Accounts(RULES, journal=True)
    for event in events:
        ledger.apply(event)
    assert ledger.trial_balance() == 0
    hasher = hashlib.sha256()
    ledger.digest(hasher)
    return hasher.hexdigest()


def _auction_after_a_halt(bank: Bank) -> list[TradeExecuted]:
    """Two call auctions, each when an operator resumes the halted contract: a provider's ask
    1,000 x10 against b1's bid 1,200 x10, then b1's resale 1,100 x10 against b2's bid
    1,200 x10."""
    bank.send(funds("p1", 10_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=SYM, quantity=10))
    bank.send(funds("b1", 100_000))
    bank.send(funds("b2", 100_000))
    for seller, buyer, ask in (("p1", "b1", 1_000), ("b1", "b2", 1_100)):
        bank.send(ControlMarket(operator_id="ops", action="halt", symbol=SYM, reason="drill"))
        bank.send(order(f"s-{seller}", seller, "sell", ask, 10))
        bank.send(order(f"b-{buyer}", buyer, "buy", 1_200, 10))
        bank.send(ControlMarket(operator_id="ops", action="resume", symbol=SYM, reason="go"))
    trades: list[TradeExecuted] = bank.of(TradeExecuted)
    return trades


def test_both_sides_of_an_auction_trade_pay_the_maker_fee() -> None:
    bank = Bank(MarketRules(bond_bps=0, fees=(("H100-80G", 5, 20),)))
    trades = _auction_after_a_halt(bank)
    assert [(t.price, t.quantity, t.aggressor) for t in trades] == [
        (1_000, 10, None),
        (1_100, 10, None),
    ]
    # 0.05% each side, never the taker's 0.2%: b1 paid 5 on 10,000 and 5 on its resale of
    # 11,000; b2 paid 5 on 11,000; the provider's 5 on 10,000 is charged at delivery.
    assert bank.cash("b1") == 100_000 - 10_000 - 5 + 11_000 - 5
    assert bank.cash("b2") == 100_000 - 11_000 - 5
    assert bank.ledger.ledger["fees"] == 15
    delivered = [e for e in bank.tick(DELIVERY) if isinstance(e, DeliveryObligation)]
    assert [(o.buyer_id, o.amount, o.fee) for o in delivered] == [("b2", 10_000, 5)]
    assert bank.ledger.trial_balance() == 0


def test_an_auction_trade_pays_no_maker_rebate() -> None:
    bank = Bank(MarketRules(bond_bps=0, fees=(("H100-80G", -10, 20),)))
    _auction_after_a_halt(bank)
    assert bank.cash("b1") == 100_000 - 10_000 + 11_000
    assert bank.cash("b2") == 100_000 - 11_000
    delivered = [e for e in bank.tick(DELIVERY) if isinstance(e, DeliveryObligation)]
    assert [(o.buyer_id, o.amount, o.fee) for o in delivered] == [("b2", 10_000, 0)]
    assert bank.ledger.ledger.get("rebates", 0) == 0
    assert bank.ledger.ledger.get("fees", 0) == 0
    assert bank.ledger.trial_balance() == 0


def test_withdrawal_and_recall_ids_are_each_senders_own() -> None:
    bank = Bank()
    for provider in ("p1", "p2"):
        bank.send(funds(provider, 10_000))
        deposit = DepositCapacity(deposit_id="night-1", account_id=provider, symbol=INT, quantity=2)
        bank.send(deposit)
        bank.send(PlaceOrder(order_id="ask-1", account_id=provider, symbol=INT, side="sell",
                             price=600, quantity=2))  # fmt: skip
    bank.send(funds("b1", 10_000))
    bank.send(PlaceOrder(order_id="bid-1", account_id="b1", symbol=INT, side="buy", price=600,
                         quantity=4))  # fmt: skip
    assert bank.ledger.positions == {("b1", INT): 4}

    withdrawn = [
        bank.send(WithdrawFunds(withdrawal_id="w1", account_id=account, amount=100))[0]
        for account in ("p1", "p2")
    ]
    assert [type(e).__name__ for e in withdrawn] == ["FundsWithdrawn", "FundsWithdrawn"]
    recalled = [
        bank.send(RecallCapacity(recall_id="r1", account_id=provider, symbol=INT, quantity=1))
        for provider in ("p1", "p2")
    ]
    assert [
        [(e.recall_id, e.provider_id) for e in events if isinstance(e, CapacityRecalled)]
        for events in recalled
    ] == [[("r1", "p1")], [("r1", "p2")]]
    again = _refused(
        bank.send(RecallCapacity(recall_id="r1", account_id="p2", symbol=INT, quantity=1))
    )
    assert (again.reason, again.message) == (
        RejectReason.DUPLICATE_ID,
        "recall id 'r1' was used before",
    )
    twice = _refused(bank.send(WithdrawFunds(withdrawal_id="w1", account_id="p1", amount=1)))
    assert twice.message == "WithdrawFunds id 'w1' was used before by p1"


def test_request_ids_decided_before_they_were_scoped_stay_used() -> None:
    bank = Bank()
    bank.send(funds("b1", 5_000))
    old = bank.risk.snapshot()
    # A snapshot of that time holds the request's key without its sender.
    old["request_ids"] = ["WithdrawFunds:w9"]
    risk = RiskStage.restore(bank.risk.catalogue, old, SEAL)

    refused = risk.handle(
        WithdrawFunds(withdrawal_id="w9", account_id="b1", amount=1), EventStamp("c", 0, 99, 1)
    )

    assert isinstance(refused, RequestRejected)
    assert refused.reason == RejectReason.DUPLICATE_ID
