"""A resale made smaller (an amend down, or self-trade prevention taking units off it) gives
the units back to what the seller holds for resale, never to deposited capacity: before, they
landed in its capacity (available up, held below zero), where it could sell them again as a
provider with a bond, or withdraw them, so card-hours were owed that no one had deposited.

The loop of tests/test_bank.py (risk, matching, a settlement-style journal) runs it."""

from __future__ import annotations

from exchange.domain.accounts import Balance
from exchange.domain.messages import (
    AmendOrder,
    DepositCapacity,
    OrderAccepted,
    OrderAmended,
    OrderReduced,
    OrderRejected,
    PlaceOrder,
    RejectReason,
    RequestRejected,
    WithdrawCapacity,
)
from tests.test_bank import INT, Bank, funds

HOUR = {"symbol": INT, "price": 600}


def _holder_of_five() -> Bank:
    """p1 deposited and sold 5 units of the hour; b1 bought them all."""
    bank = Bank()
    for account in ("p1", "b1", "b2"):
        bank.send(funds(account, 100_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=INT, quantity=5))
    bank.send(PlaceOrder(order_id="s1", account_id="p1", side="sell", quantity=5, **HOUR))
    bank.send(PlaceOrder(order_id="o1", account_id="b1", side="buy", quantity=5, **HOUR))
    assert bank.ledger.positions[("b1", INT)] == 5
    return bank


def _holds_nothing_deposited(bank: Bank, account: str) -> None:
    for accounts in (bank.risk.accounts, bank.ledger):
        assert accounts.capacity.get((account, INT), Balance()) == Balance(), account


def _resale(bank: Bank, order_id: str, quantity: int, **options: str) -> OrderAccepted:
    placed = bank.send(
        PlaceOrder.model_validate(
            {"order_id": order_id, "account_id": "b1", "side": "sell", "quantity": quantity,
             **HOUR, "price": 700, **options}
        )
    )[0]  # fmt: skip
    assert isinstance(placed, OrderAccepted), placed
    assert placed.backing == "entitlement"
    return placed


def test_an_amended_down_resale_gives_its_units_back_to_the_holding() -> None:
    bank = _holder_of_five()
    resale = _resale(bank, "r1", 5)
    amended = bank.send(AmendOrder(order_id=resale.order_id, account_id="b1", quantity=1))
    assert [a.remaining for a in amended if isinstance(a, OrderAmended)] == [1]
    _holds_nothing_deposited(bank, "b1")
    assert bank.risk.accounts.resale_held[("b1", INT)] == 1
    # Four more may be resold (what it holds and does not offer), and only as a resale.
    again = _resale(bank, "r2", 4)
    assert again.bond_per_unit == 0
    refused = bank.send(
        PlaceOrder(order_id="r3", account_id="b1", side="sell", quantity=1, **HOUR)
    )[0]
    assert isinstance(refused, OrderRejected)
    assert refused.reason == RejectReason.INSUFFICIENT_CAPACITY
    # Nor can it withdraw capacity it never deposited.
    withdrawn = bank.send(
        WithdrawCapacity(withdrawal_id="w1", account_id="b1", symbol=INT, quantity=1)
    )[0]
    assert isinstance(withdrawn, RequestRejected)
    assert withdrawn.reason == RejectReason.INSUFFICIENT_CAPACITY
    _holds_nothing_deposited(bank, "b1")


def test_a_resale_reduced_by_self_trade_prevention_gives_its_units_back_to_the_holding() -> None:
    bank = _holder_of_five()
    resale = _resale(bank, "r1", 5, stp_group="desk")
    own_bid = bank.send(
        PlaceOrder.model_validate(
            {"order_id": "o2", "account_id": "b1", "side": "buy", "quantity": 3, **HOUR,
             "price": 700, "stp_group": "desk", "stp_mode": "decrement"}
        )
    )  # fmt: skip
    assert [(r.order_id, r.quantity) for r in own_bid if isinstance(r, OrderReduced)][:1] == [
        (resale.order_id, 3)
    ]
    _holds_nothing_deposited(bank, "b1")
    assert bank.risk.accounts.resale_held[("b1", INT)] == 2
    assert bank.ledger.resale_held[("b1", INT)] == 2
    assert bank.ledger.positions[("b1", INT)] == 5
    assert bank.ledger.trial_balance() == 0
