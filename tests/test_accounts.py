"""Unit tests of the money rules: holds, trades, cancels, conservation and the digest."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from exchange.domain.accounts import Accounts, Balance, OpenOrder, UnbalancedEntryError
from exchange.domain.catalogue import MarketRules
from exchange.domain.messages import (
    CancelReason,
    CapacityDeposited,
    FundsDeposited,
    OrderAccepted,
    OrderCancelled,
    Side,
    TradeExecuted,
)
from matching.native import PURE_PYTHON_VARIABLE
from tests.compiled import planted_on_pure_python

SYM = "H100-80G.GZ.20271201T02"
SYM2 = "CPU.GZ.20271201T00"


def funds(account_id: str, amount: int) -> FundsDeposited:
    return FundsDeposited(
        event_id="e",
        ts=0,
        deposit_id=f"f-{account_id}-{amount}",
        account_id=account_id,
        amount=amount,
        currency="CNY",
    )


def capacity(account_id: str, quantity: int, symbol: str = SYM) -> CapacityDeposited:
    return CapacityDeposited(
        event_id="e",
        ts=0,
        deposit_id=f"k-{account_id}-{quantity}",
        account_id=account_id,
        symbol=symbol,
        quantity=quantity,
    )


def accepted(
    order_id: str, account_id: str, side: Side, price: int, quantity: int, symbol: str = SYM
) -> OrderAccepted:
    return OrderAccepted(
        event_id="e",
        ts=0,
        order_id=order_id,
        account_id=account_id,
        symbol=symbol,
        side=side,
        price=price,
        quantity=quantity,
    )


def trade(
    buy: OrderAccepted | OpenOrder, sell: OrderAccepted | OpenOrder, price: int, quantity: int
) -> TradeExecuted:
    return TradeExecuted(
        event_id="e",
        ts=0,
        trade_id=f"{buy.symbol}:1",
        symbol=buy.symbol,
        price=price,
        quantity=quantity,
        buy_order_id=buy.order_id,
        sell_order_id=sell.order_id,
        buyer_id=buy.account_id,
        seller_id=sell.account_id,
        aggressor="buy",
    )


def cancelled(order: OrderAccepted | OpenOrder, remaining: int) -> OrderCancelled:
    return OrderCancelled(
        event_id="e",
        ts=0,
        order_id=order.order_id,
        account_id=order.account_id,
        symbol=order.symbol,
        side=order.side,
        remaining=remaining,
        reason=CancelReason.REQUESTED,
    )


def digest(accounts: Accounts) -> str:
    hasher = hashlib.sha256()
    accounts.digest(hasher)
    return hasher.hexdigest()


def test_deposits_credit_available() -> None:
    accounts = Accounts()

    accounts.apply(funds("a1", 10_000))
    accounts.apply(funds("a1", 250))
    accounts.apply(capacity("p1", 8))

    assert accounts.cash == {"a1": Balance(10_250, 0)}
    assert accounts.capacity == {("p1", SYM): Balance(8, 0)}


def test_buy_holds_price_times_quantity() -> None:
    accounts = Accounts()
    accounts.apply(funds("a1", 10_000))

    accounts.apply(accepted("b1", "a1", "buy", 120, 5))

    assert accounts.cash["a1"] == Balance(available=9_400, held=600)
    assert accounts.open_orders == {"b1": OpenOrder("b1", "a1", SYM, "buy", 120, 5)}


def test_sell_holds_quantity_of_capacity() -> None:
    accounts = Accounts()
    accounts.apply(capacity("p1", 10))

    accounts.apply(accepted("s1", "p1", "sell", 100, 3))

    assert accounts.capacity[("p1", SYM)] == Balance(available=7, held=3)
    assert accounts.open_orders["s1"] == OpenOrder("s1", "p1", SYM, "sell", 100, 3)


def test_shortfall_is_what_the_order_lacks() -> None:
    accounts = Accounts()
    accounts.apply(funds("a1", 1_000))
    accounts.apply(capacity("p1", 2))

    assert accounts.shortfall("a1", SYM, "buy", 100, 10) == 0
    assert accounts.shortfall("a1", SYM, "buy", 110, 10) == 100
    assert accounts.shortfall("p1", SYM, "sell", 100, 2) == 0
    assert accounts.shortfall("p1", SYM, "sell", 100, 5) == 3
    assert accounts.shortfall("p1", SYM2, "sell", 100, 1) == 1


def test_trade_at_a_better_price_returns_the_difference_to_the_buyer() -> None:
    accounts = Accounts()
    accounts.apply(funds("a1", 10_000))
    accounts.apply(capacity("p1", 10))
    buy, sell = accepted("b1", "a1", "buy", 120, 5), accepted("s1", "p1", "sell", 100, 5)
    accounts.apply(buy)
    accounts.apply(sell)

    accounts.apply(trade(buy, sell, price=100, quantity=5))

    # Held 600 at the limit of 120; paid 500 at 100; the 100 difference comes back.
    assert accounts.cash["a1"] == Balance(available=9_500, held=0)
    # The provider is paid at delivery: until then the payment waits in escrow.
    assert "p1" not in accounts.cash
    assert accounts.ledger == {f"escrow:{SYM}": 500, "external": -10_000}
    assert accounts.capacity[("p1", SYM)] == Balance(available=5, held=0)
    assert accounts.positions == {("a1", SYM): 5}
    assert accounts.open_orders == {}


def test_a_provider_sale_escrows_price_times_quantity_and_its_held_capacity_drops() -> None:
    accounts = Accounts()
    accounts.apply(funds("a1", 10_000))
    accounts.apply(funds("p1", 7))
    accounts.apply(capacity("p1", 10))
    buy, sell = accepted("b1", "a1", "buy", 130, 4), accepted("s1", "p1", "sell", 110, 6)
    accounts.apply(buy)
    accounts.apply(sell)

    accounts.apply(trade(buy, sell, price=120, quantity=4))

    assert accounts.cash["p1"] == Balance(available=7, held=0)
    assert accounts.ledger[f"escrow:{SYM}"] == 480
    assert accounts.capacity[("p1", SYM)] == Balance(available=4, held=2)
    assert accounts.open_orders["s1"].remaining == 2
    assert accounts.cash["a1"] == Balance(available=10_000 - 480, held=0)
    assert accounts.positions == {("a1", SYM): 4}


def test_buyer_position_grows_with_each_trade() -> None:
    accounts = Accounts()
    accounts.apply(funds("a1", 100_000))
    accounts.apply(capacity("p1", 10))
    accounts.apply(capacity("p2", 10))
    buy = accepted("b1", "a1", "buy", 200, 9)
    s1, s2 = accepted("s1", "p1", "sell", 150, 4), accepted("s2", "p2", "sell", 180, 5)
    for order in (buy, s1, s2):
        accounts.apply(order)

    accounts.apply(trade(buy, s1, price=150, quantity=4))
    assert accounts.positions == {("a1", SYM): 4}
    accounts.apply(trade(buy, s2, price=180, quantity=5))

    assert accounts.positions == {("a1", SYM): 9}
    assert accounts.cash["a1"] == Balance(available=100_000 - 600 - 900, held=0)
    assert accounts.ledger[f"escrow:{SYM}"] == 600 + 900


def test_partial_fills_then_cancel_release_exactly_the_remainder() -> None:
    accounts = Accounts()
    accounts.apply(funds("a1", 5_000))
    accounts.apply(capacity("p1", 10))
    buy, sell = accepted("b1", "a1", "buy", 120, 10), accepted("s1", "p1", "sell", 100, 10)
    accounts.apply(buy)
    accounts.apply(sell)
    assert accounts.cash["a1"] == Balance(available=3_800, held=1_200)

    accounts.apply(trade(buy, sell, price=110, quantity=3))
    assert accounts.cash["a1"] == Balance(available=3_830, held=840)
    accounts.apply(trade(buy, sell, price=120, quantity=2))
    assert accounts.cash["a1"] == Balance(available=3_830, held=600)
    assert accounts.open_orders["b1"].remaining == 5
    assert accounts.open_orders["s1"].remaining == 5

    accounts.apply(cancelled(buy, remaining=5))
    accounts.apply(cancelled(sell, remaining=5))

    assert accounts.cash["a1"] == Balance(available=5_000 - 330 - 240, held=0)
    assert accounts.ledger[f"escrow:{SYM}"] == 570
    assert accounts.capacity[("p1", SYM)] == Balance(available=5, held=0)
    assert accounts.positions == {("a1", SYM): 5}
    assert accounts.open_orders == {}


def test_release_of_an_untracked_order_changes_nothing() -> None:
    accounts = Accounts()
    accounts.apply(funds("a1", 1_000))
    accounts.apply(accepted("b1", "a1", "buy", 100, 4))
    before = digest(accounts)

    accounts.apply(cancelled(accepted("zz", "a1", "buy", 100, 4), remaining=4))

    assert digest(accounts) == before
    assert accounts.cash["a1"] == Balance(available=600, held=400)


def test_apply_trade_ignores_the_side_this_instance_does_not_track() -> None:
    accounts = Accounts()
    accounts.apply(funds("a1", 1_000))
    buy = accepted("b1", "a1", "buy", 100, 4)
    accounts.apply(buy)
    foreign_sell = accepted("s9", "p9", "sell", 90, 4)

    accounts.apply(trade(buy, foreign_sell, price=90, quantity=4))

    assert accounts.cash == {"a1": Balance(available=640, held=0)}
    assert accounts.capacity == {}
    assert accounts.positions == {("a1", SYM): 4}


def test_apply_trade_of_two_untracked_orders_changes_nothing() -> None:
    accounts = Accounts()
    accounts.apply(funds("a1", 1_000))
    accounts.apply(capacity("p1", 3))
    before = digest(accounts)

    accounts.apply(
        trade(accepted("b9", "a1", "buy", 100, 1), accepted("s9", "p1", "sell", 100, 1), 100, 1)
    )

    assert digest(accounts) == before


def test_digest_does_not_depend_on_insertion_order() -> None:
    first, second = Accounts(), Accounts()
    orders = [
        accepted("b1", "a1", "buy", 120, 5),
        accepted("b2", "a2", "buy", 110, 2, SYM2),
        accepted("s1", "p1", "sell", 100, 3),
    ]
    deposits: list[FundsDeposited | CapacityDeposited] = [
        funds("a1", 1_000),
        funds("a2", 500),
        capacity("p1", 4),
        capacity("a1", 1, SYM2),
    ]

    for deposit in deposits:
        first.apply(deposit)
    for order in orders:
        first.apply(order)
    for deposit in reversed(deposits):
        second.apply(deposit)
    for order in reversed(orders):
        second.apply(order)

    assert list(first.cash) != list(second.cash)
    assert digest(first) == digest(second)


def test_digest_differs_when_state_differs() -> None:
    first, second = Accounts(), Accounts()
    first.apply(funds("a1", 1_000))
    second.apply(funds("a1", 1_001))

    assert digest(first) != digest(second)
    assert digest(Accounts()) == hashlib.sha256().hexdigest()


class Conservation(RuleBasedStateMachine):
    """Random deposits, holds, consistent trades and cancels never create or destroy value."""

    ACCOUNTS = ("a", "b", "c")
    SYMBOLS = (SYM, SYM2)

    def __init__(self) -> None:
        super().__init__()
        self.accounts = Accounts()
        self.cash_deposited = 0
        self.capacity_deposited: Counter[str] = Counter()
        self.next_id = 0

    @rule(account=st.sampled_from(ACCOUNTS), amount=st.integers(1, 100_000))
    def deposit_funds(self, account: str, amount: int) -> None:
        self.accounts.apply(funds(account, amount))
        self.cash_deposited += amount

    @rule(
        account=st.sampled_from(ACCOUNTS),
        symbol=st.sampled_from(SYMBOLS),
        quantity=st.integers(1, 50),
    )
    def deposit_capacity(self, account: str, symbol: str, quantity: int) -> None:
        self.accounts.apply(capacity(account, quantity, symbol))
        self.capacity_deposited[symbol] += quantity

    @rule(
        account=st.sampled_from(ACCOUNTS),
        symbol=st.sampled_from(SYMBOLS),
        side=st.sampled_from(["buy", "sell"]),
        price=st.integers(1, 1_000),
        quantity=st.integers(1, 30),
    )
    def place(self, account: str, symbol: str, side: Side, price: int, quantity: int) -> None:
        # Only what the risk stage would accept is held.
        if self.accounts.shortfall(account, symbol, side, price, quantity):
            return
        self.next_id += 1
        self.accounts.apply(accepted(f"o{self.next_id}", account, side, price, quantity, symbol))

    def _crossing(self) -> list[tuple[OpenOrder, OpenOrder]]:
        orders = sorted(self.accounts.open_orders.values(), key=lambda o: o.order_id)
        return [
            (b, s)
            for b in orders
            if b.side == "buy"
            for s in orders
            if s.side == "sell" and s.symbol == b.symbol and s.price <= b.price
        ]

    @precondition(lambda self: bool(self._crossing()))
    @rule(data=st.data())
    def execute(self, data: st.DataObject) -> None:
        buy, sell = data.draw(st.sampled_from(self._crossing()))
        price = data.draw(st.integers(sell.price, buy.price))
        quantity = data.draw(st.integers(1, min(buy.remaining, sell.remaining)))
        self.accounts.apply(trade(buy, sell, price, quantity))

    @precondition(lambda self: bool(self.accounts.open_orders))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from(sorted(self.accounts.open_orders)))
        open_order = self.accounts.open_orders[order]
        self.accounts.apply(cancelled(open_order, open_order.remaining))

    @invariant()
    def cash_is_conserved(self) -> None:
        total = sum(b.available + b.held for b in self.accounts.cash.values())
        escrowed = sum(v for name, v in self.accounts.ledger.items() if name.startswith("escrow:"))
        assert total + escrowed == self.cash_deposited
        assert self.accounts.trial_balance() == 0

    @invariant()
    def capacity_is_conserved(self) -> None:
        for symbol in self.SYMBOLS:
            balances = sum(
                b.available + b.held for (_, s), b in self.accounts.capacity.items() if s == symbol
            )
            positions = sum(q for (_, s), q in self.accounts.positions.items() if s == symbol)
            assert balances + positions == self.capacity_deposited[symbol]

    @invariant()
    def holds_match_open_orders(self) -> None:
        cash_held: Counter[str] = Counter()
        capacity_held: Counter[tuple[str, str]] = Counter()
        for o in self.accounts.open_orders.values():
            assert o.remaining > 0
            if o.side == "buy":
                cash_held[o.account_id] += o.price * o.remaining
            else:
                capacity_held[(o.account_id, o.symbol)] += o.remaining
        for account_id, balance in self.accounts.cash.items():
            assert balance.held == cash_held[account_id]
            assert balance.available >= 0
        for key, balance in self.accounts.capacity.items():
            assert balance.held == capacity_held[key]
            assert balance.available >= 0


Conservation.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestConservation = Conservation.TestCase


def _trade_with_an_unbalanced_fee() -> None:
    """Post a trade whose fee legs, by a planted defect, credit a fee nobody paid."""
    accounts = Accounts()
    accounts.apply(funds("a1", 10_000))
    accounts.apply(capacity("p1", 10))
    buy, sell = accepted("b1", "a1", "buy", 120, 5), accepted("s1", "p1", "sell", 100, 5)
    accounts.apply(buy)
    accounts.apply(sell)
    with mock.patch("exchange.domain.accounts._fee_legs", return_value=[("fees", 1)]):
        accounts.apply(trade(buy, sell, price=100, quantity=5))


def test_an_unbalanced_journal_entry_is_refused() -> None:
    if planted_on_pure_python(
        f"tests/test_accounts.py::{test_an_unbalanced_journal_entry_is_refused.__name__}"
    ):
        return
    with pytest.raises(UnbalancedEntryError, match=r"e/buy \(trade_buy\) is off by 1"):
        _trade_with_an_unbalanced_fee()


def test_the_balance_check_holds_under_python_optimisation() -> None:
    # `python -O` drops asserts: the check is an explicit raise so it fires there too.
    script = (
        "import tests.test_accounts as t\n"
        "from exchange.domain.accounts import UnbalancedEntryError\n"
        "try:\n"
        "    t._trade_with_an_unbalanced_fee()\n"
        "except UnbalancedEntryError as error:\n"
        "    print('refused:', error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-O", "-c", script],
        # Pure Python: the defect is planted by patching a module function.
        env={**os.environ, PURE_PYTHON_VARIABLE: "1"},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.stdout.startswith("refused: journal entry e/buy (trade_buy) is off by 1"), done


FEES = MarketRules(fees=(("H100-80G", -10, 20), ("CPU", 5, 30)))
"""A maker rebate on one class and fees on another: every leg a buy's fill posts."""


def _fills(accounts: Accounts, owns: Callable[[str], bool] | None = None) -> None:
    """Deposits, buys and sells, and fills of the buys as taker and as maker, partial first."""
    buy1, sell1 = accepted("b1", "a1", "buy", 13_000, 10), accepted("s1", "p1", "sell", 12_000, 10)
    buy2 = accepted("b2", "a2", "buy", 7_700, 9, SYM2)
    sell2 = accepted("s2", "p1", "sell", 7_000, 9, SYM2)
    events: list[FundsDeposited | CapacityDeposited | OrderAccepted | TradeExecuted] = [
        funds("a1", 1_000_000),
        funds("a2", 1_000_000),
        capacity("p1", 50),
        capacity("p1", 50, SYM2),
        buy1,
        buy2,
        sell1,
        sell2,
        trade(buy1, sell1, 12_000, 3),
        trade(buy1, sell1, 12_500, 7).model_copy(update={"aggressor": "sell"}),
        trade(buy2, sell2, 7_700, 4),
        trade(buy2, sell2, 7_100, 5),
    ]
    for event in events:
        accounts.apply(event, owns)


def test_a_fill_posted_in_place_is_the_entry_of_its_legs() -> None:
    # A replay's fold (no journal, no owner filter) posts a buy's fill in place; the risk
    # stage (an owner filter) and settlement (a journal) post its legs through `_post`.
    in_place, journalled, owned = Accounts(FEES), Accounts(FEES, journal=True), Accounts(FEES)
    _fills(in_place)
    _fills(journalled)
    _fills(owned, lambda _: True)

    assert in_place.snapshot() == journalled.snapshot()
    assert digest(in_place) == digest(journalled)
    # The risk stage keeps the participants' side of the ledger alone.
    assert owned.ledger == {}
    assert {**in_place.snapshot(), "ledger": []} == owned.snapshot()
    assert in_place.trial_balance() == 0
    # b1 (held 130,000 + 260 for the 0.2% taker fee at most) filled as taker, 36,000 and a fee
    # of 72, then as maker, 87,500 less a 0.1% rebate of 87 (87.5 rounded toward zero).
    assert in_place.cash["a1"] == Balance(available=1_000_000 - 36_072 - 87_413, held=0)
    # b2 (0.3% taker fee): 30,800 and 92 (92.4), then 35,500 and 106 (106.5).
    assert in_place.cash["a2"] == Balance(available=1_000_000 - 30_892 - 35_606, held=0)
    assert in_place.ledger["escrow:" + SYM] == 36_000 + 87_500
    assert in_place.ledger["escrow:" + SYM2] == 30_800 + 35_500
    assert in_place.ledger["fees"] == 72 + 92 + 106
    assert in_place.ledger["rebates"] == -87
