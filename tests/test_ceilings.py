"""The risk stage refuses what would take an amount past the exchange's ceiling
(`accounts.CEILING`), with `ceiling_exceeded` and a message saying which amount, so no stored
balance or sum can pass a BIGINT and stall settlement."""

from __future__ import annotations

from typing import get_args

from exchange.domain.accounts import CEILING
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import (
    AmendOrder,
    AmendRejected,
    AmendRequested,
    Command,
    CreateProgramme,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    Event,
    EventStamp,
    FundsDeposited,
    FundsWithdrawn,
    GrantConcession,
    OrderAccepted,
    OrderRejected,
    PlaceBlockOrder,
    PlaceOrder,
    ProgrammeCreated,
    RejectReason,
    RequestRejected,
    WithdrawFunds,
)
from exchange.domain.operators import OperatorCommand, OperatorSeal
from exchange.domain.risk import RiskStage

H100 = "H100-80G.GZ.20271201T00"  # tick 10 fen
CPU0, CPU1 = "CPU.GZ.20271201T00", "CPU.GZ.20271201T01"  # tick 1 fen
MOST = 10**15
"""The largest amount or quantity one command may carry."""
SEAL = OperatorSeal([b"the ceiling tests' operator key"])


class Risk:
    """One risk partition of `partitions`, fed commands in log order."""

    def __init__(self, partitions: int = 1) -> None:
        self.stage = RiskStage(default_catalogue(), SEAL, partitions)
        self.offset = 0

    def send(self, command: Command) -> Event:
        if isinstance(command, get_args(OperatorCommand)):
            command = SEAL.sign(command)
        self.offset += 1
        return self.stage.handle(command, EventStamp("c", 0, self.offset, 1_000 + self.offset))

    def deposit(self, account: str, amount: int) -> Event:
        return self.send(
            DepositFunds(deposit_id=f"d{self.offset}", account_id=account, amount=amount)
        )


def _refused(event: Event) -> str:
    assert isinstance(event, DepositRejected | OrderRejected | AmendRejected | RequestRejected)
    assert event.reason is RejectReason.CEILING_EXCEEDED, event
    return event.message


def test_deposits_stop_at_the_partitions_share_of_the_ceiling() -> None:
    risk = Risk(partitions=4)
    share = CEILING // 4
    for _ in range(share // MOST):
        assert isinstance(risk.deposit("whale", MOST), FundsDeposited)
    assert risk.stage.accounts.cash["whale"].available == share
    assert _refused(risk.deposit("whale", 1)) == (
        f"a deposit of 1 fen would take the money brought into the exchange through this risk "
        f"partition to {share + 1} fen, past its share of the exchange's ceiling ({share} fen of "
        f"{CEILING} fen, over 4 partitions)"
    )
    # The share is the partition's, whoever deposits.
    _refused(risk.deposit("minnow", 1))
    # A deposit already made is still recognised as one, not refused as too much.
    again = risk.send(DepositFunds(deposit_id="d1", account_id="whale", amount=MOST))
    assert isinstance(again, DepositRejected)
    assert again.reason is RejectReason.DUPLICATE_DEPOSIT_ID
    # What leaves the exchange makes room again.
    withdrawal = WithdrawFunds(withdrawal_id="w1", account_id="whale", amount=MOST)
    assert isinstance(risk.send(withdrawal), FundsWithdrawn)
    assert isinstance(risk.deposit("minnow", MOST), FundsDeposited)
    _refused(risk.deposit("minnow", 1))


def test_programme_and_concession_budgets_count_as_money_brought_in() -> None:
    risk = Risk(partitions=1_000)  # a share of exactly MOST
    assert isinstance(risk.deposit("b", MOST - 10), FundsDeposited)
    programme = {
        "admin_id": "admin",
        "issuer": "city",
        "cap_per_contract": 5,
        "cap_per_enterprise": 5,
        "valid_from": 0,
        "valid_until": 10**13,
    }
    refused = risk.send(CreateProgramme(programme_id="p1", budget=11, **programme))
    assert "a programme budget of 11 fen" in _refused(refused)
    created = risk.send(CreateProgramme(programme_id="p1", budget=6, **programme))
    assert isinstance(created, ProgrammeCreated)
    concession = {
        "concession_id": "c1",
        "operator_id": "ops",
        "account_id": "b",
        "discount_bps": 5_000,
        "valid_from": 0,
        "valid_until": 10**13,
    }
    assert "a concession budget of 5 fen" in _refused(
        risk.send(GrantConcession(budget=5, **concession))
    )
    assert not isinstance(risk.send(GrantConcession(budget=4, **concession)), RequestRejected)
    _refused(risk.deposit("b", 1))


def test_capacity_in_one_contract_stops_at_the_ceiling() -> None:
    risk = Risk()

    def deposit(quantity: int, symbol: str = H100) -> Event:
        return risk.send(
            DepositCapacity(
                deposit_id=f"c{risk.offset}", account_id="p", symbol=symbol, quantity=quantity
            )
        )

    for _ in range(CEILING // MOST):
        assert not isinstance(deposit(MOST), DepositRejected)
    assert _refused(deposit(1)) == (
        f"account p would hold {CEILING + 1} units of {H100}, past the ceiling of {CEILING} "
        "units in one contract"
    )
    # Units held behind an ask still count.
    sell = PlaceOrder(
        order_id="s", account_id="p", symbol=H100, side="sell", price=10, quantity=MOST
    )
    assert isinstance(risk.send(sell), OrderAccepted)
    _refused(deposit(1))
    assert not isinstance(deposit(MOST, CPU0), DepositRejected)


def test_orders_blocks_and_amends_past_the_ceiling_are_refused() -> None:
    risk = Risk()
    risk.send(DepositCapacity(deposit_id="c", account_id="p", symbol=H100, quantity=MOST))
    for symbol in (CPU0, CPU1):
        risk.send(DepositCapacity(deposit_id=symbol, account_id="p", symbol=symbol, quantity=MOST))

    def sell(order_id: str, price: int, quantity: int = MOST) -> Event:
        return risk.send(
            PlaceOrder(
                order_id=order_id,
                account_id="p",
                symbol=H100,
                side="sell",
                price=price,
                quantity=quantity,
            )
        )

    assert _refused(sell("s1", 1_010)) == (
        f"an order of {MOST} units at 1010 fen comes to {1_010 * MOST} fen, past the ceiling "
        f"of {CEILING} fen for one order"
    )
    # At the ceiling exactly is allowed.
    assert isinstance(sell("s2", 1_000), OrderAccepted)
    assert "comes to" in _refused(risk.send(AmendOrder(order_id="s2", account_id="p", price=1_010)))
    lower = risk.send(AmendOrder(order_id="s2", account_id="p", price=990))
    assert isinstance(lower, AmendRequested)
    # A buy far past the ceiling is refused for it, not for want of funds.
    buy = PlaceOrder(
        order_id="b1", account_id="b", symbol=H100, side="buy", price=MOST, quantity=MOST
    )
    assert f"comes to {MOST * MOST} fen" in _refused(risk.send(buy))
    block = PlaceBlockOrder(
        order_id="k1", account_id="p", symbols=[CPU0, CPU1], side="sell", price=501, quantity=MOST
    )
    assert f"an order of {2 * MOST} units at 501 fen" in _refused(risk.send(block))


def test_the_money_brought_in_is_kept_in_snapshots_and_the_state_hash() -> None:
    risk = Risk(partitions=4)
    risk.deposit("b", 700)
    restored = RiskStage.restore(default_catalogue(), risk.stage.snapshot(), SEAL, 4)
    assert restored.money_in == 700
    assert restored.state_hash() == risk.stage.state_hash()
    before = risk.stage.snapshot()
    del before["money_in"]
    older = RiskStage.restore(default_catalogue(), before, SEAL, 4)
    # A snapshot from before the ceiling does not pass for this state: the stage replays.
    assert older.state_hash() != risk.stage.state_hash()
