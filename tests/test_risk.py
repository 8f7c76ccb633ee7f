"""Unit tests of the risk stage: every rejection, holds, cancels, feedback and determinism."""

from __future__ import annotations

import pytest

from exchange.domain.accounts import Balance
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import (
    CancelOrder,
    CancelReason,
    CancelRejected,
    CancelRequested,
    CapacityDeposited,
    Command,
    CommandRejected,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    Event,
    EventStamp,
    FundsDeposited,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    PlaceOrder,
    RejectReason,
    Side,
    TradeExecuted,
    encode,
    exchange_order_id,
)
from exchange.domain.risk import RiskStage

H100 = "H100-80G.GZ.20271201T00"  # tick 10 fen
CPU = "CPU.GZ.20271201T01"  # tick 1 fen
UNLISTED = "H100-80G.GZ.20261202T00"


class Feed:
    """A risk stage and the offsets of the records fed to it."""

    def __init__(self) -> None:
        self.stage = RiskStage(default_catalogue())
        self.offset = 0

    def send(self, command: Command) -> Event:
        stamp = EventStamp("t", 0, self.offset, 1_000 + self.offset)
        self.offset += 1
        return self.stage.handle(command, stamp)

    def send_all(self, commands: list[Command]) -> list[Event]:
        return [self.send(command) for command in commands]


def place(
    order_id: str, account_id: str, side: Side, price: int, quantity: int, symbol: str = H100
) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id,
        account_id=account_id,
        symbol=symbol,
        side=side,
        price=price,
        quantity=quantity,
    )


def funds(deposit_id: str, account_id: str, amount: int) -> DepositFunds:
    return DepositFunds(deposit_id=deposit_id, account_id=account_id, amount=amount)


def capacity(
    deposit_id: str, account_id: str, quantity: int, symbol: str = H100
) -> DepositCapacity:
    return DepositCapacity(
        deposit_id=deposit_id, account_id=account_id, symbol=symbol, quantity=quantity
    )


def cancel(order_id: str, account_id: str) -> CancelOrder:
    return CancelOrder(order_id=order_id, account_id=account_id)


def oid(account_id: str, order_id: str) -> str:
    """The exchange's id of the order the account placed as `order_id`."""
    return exchange_order_id(account_id, order_id)


SETUP: list[Command] = [
    funds("d1", "a1", 1_000),
    capacity("d2", "p1", 2),
    place("o1", "a1", "buy", 100, 3),
]

REJECTIONS = [
    pytest.param(
        place("o2", "a1", "buy", 100, 1, symbol=UNLISTED),
        OrderRejected,
        RejectReason.UNKNOWN_CONTRACT,
        f"contract '{UNLISTED}' is not listed",
        id="unknown-contract",
    ),
    pytest.param(
        place("o2", "a1", "buy", 105, 1),
        OrderRejected,
        RejectReason.PRICE_NOT_ON_TICK,
        f"price 105 is not a multiple of the tick size 10 fen of {H100}",
        id="price-off-tick",
    ),
    pytest.param(
        place("o2", "a1", "buy", 110, 7),
        OrderRejected,
        RejectReason.INSUFFICIENT_FUNDS,
        "order needs 770 fen, account a1 has 700 fen available",
        id="insufficient-funds",
    ),
    pytest.param(
        place("o2", "p1", "sell", 100, 3),
        OrderRejected,
        RejectReason.INSUFFICIENT_CAPACITY,
        f"order sells 3 units of {H100}, account p1 has 2 available "
        "of deposited capacity and 0 of entitlements to resell",
        id="insufficient-capacity",
    ),
    pytest.param(
        place("o1", "a1", "buy", 100, 1),
        OrderRejected,
        RejectReason.DUPLICATE_ORDER_ID,
        "order id 'o1' was used before by a1",
        id="duplicate-order-id",
    ),
    pytest.param(
        funds("d1", "a1", 5),
        DepositRejected,
        RejectReason.DUPLICATE_DEPOSIT_ID,
        "deposit id 'd1' was used before by a1",
        id="duplicate-deposit-id",
    ),
    pytest.param(
        capacity("d3", "p1", 5, symbol=UNLISTED),
        DepositRejected,
        RejectReason.UNKNOWN_CONTRACT,
        f"contract '{UNLISTED}' is not listed",
        id="capacity-for-unknown-contract",
    ),
    pytest.param(
        cancel("o9", "a1"),
        CancelRejected,
        RejectReason.UNKNOWN_ORDER,
        "account a1 has no open order 'o9'",
        id="cancel-unknown-order",
    ),
    pytest.param(
        cancel(oid("a1", "o1"), "a2"),
        CancelRejected,
        RejectReason.NOT_ORDER_OWNER,
        f"account a2 has no open order {oid('a1', 'o1')!r}",
        id="cancel-by-another-account",
    ),
    pytest.param(
        cancel("o1", "a2"),
        CancelRejected,
        RejectReason.UNKNOWN_ORDER,
        "account a2 has no open order 'o1'",
        id="cancel-of-a-name-another-account-used",
    ),
]


@pytest.mark.parametrize(("command", "rejected", "reason", "message"), REJECTIONS)
def test_rejection_says_why_and_changes_nothing(
    command: Command, rejected: type[Event], reason: RejectReason, message: str
) -> None:
    feed = Feed()
    feed.send_all(SETUP)
    before = feed.stage.state_hash()

    event = feed.send(command)

    assert type(event) is rejected
    assert isinstance(event, OrderRejected | DepositRejected | CancelRejected)
    assert event.reason == reason
    assert event.message == message
    assert event.event_id == "t:0:3:0"
    assert event.ts == 1_003
    assert feed.stage.state_hash() == before


def test_order_rejected_echoes_the_order() -> None:
    feed = Feed()
    command = PlaceOrder(
        order_id="o1",
        account_id="a1",
        symbol=H100,
        side="buy",
        price=105,
        quantity=2,
        client_order_id="mine-1",
    )

    event = feed.send(command)

    assert event == OrderRejected(
        event_id="t:0:0:0",
        ts=1_000,
        order_id=oid("a1", "o1"),
        account_id="a1",
        symbol=H100,
        side="buy",
        price=105,
        quantity=2,
        client_order_id="mine-1",
        reason=RejectReason.PRICE_NOT_ON_TICK,
        message=f"price 105 is not a multiple of the tick size 10 fen of {H100}",
    )


@pytest.mark.parametrize(
    "command",
    [place("o2", "a9", "buy", 100, 1), place("o2", "a1", "sell", 100, 1, symbol=CPU)],
    ids=["funds-of-an-unseen-account", "capacity-in-an-unseen-contract"],
)
def test_insufficient_balance_rejection_of_an_unseen_balance_changes_nothing(
    command: PlaceOrder,
) -> None:
    feed = Feed()
    feed.send_all(SETUP)
    before = feed.stage.state_hash()

    event = feed.send(command)

    assert isinstance(event, OrderRejected)
    assert event.reason in {RejectReason.INSUFFICIENT_FUNDS, RejectReason.INSUFFICIENT_CAPACITY}
    assert feed.stage.state_hash() == before


def test_rejected_order_id_may_be_used_again() -> None:
    feed = Feed()
    feed.send(funds("d1", "a1", 1_000))

    assert isinstance(feed.send(place("o1", "a1", "buy", 105, 1)), OrderRejected)
    assert isinstance(feed.send(place("o1", "a1", "buy", 100, 1)), OrderAccepted)


def test_duplicate_deposit_id_spans_funds_and_capacity() -> None:
    feed = Feed()
    feed.send(capacity("d1", "p1", 4))

    event = feed.send(funds("d1", "p1", 500))

    assert isinstance(event, DepositRejected)
    assert event.reason == RejectReason.DUPLICATE_DEPOSIT_ID
    assert "p1" not in feed.stage.accounts.cash


def test_ids_are_each_accounts_own() -> None:
    # One partition sees both accounts: each account's names are its own all the same.
    feed = Feed()
    events = feed.send_all(
        [
            funds("d1", "a1", 1_000),
            funds("d1", "a2", 700),
            place("o1", "a1", "buy", 100, 2),
            place("o1", "a2", "buy", 100, 3),
        ]
    )

    assert [type(e) for e in events] == [
        FundsDeposited,
        FundsDeposited,
        OrderAccepted,
        OrderAccepted,
    ]
    first, second = events[2], events[3]
    assert isinstance(first, OrderAccepted)
    assert isinstance(second, OrderAccepted)
    assert (first.order_id, second.order_id) == (oid("a1", "o1"), oid("a2", "o1"))
    assert first.order_id != second.order_id
    assert feed.stage.accounts.cash["a2"] == Balance(available=400, held=300)
    # An account cancels its order by the exchange's id or by its own name for it.
    by_name = feed.send(cancel("o1", "a2"))
    by_id = feed.send(cancel(oid("a1", "o1"), "a1"))
    assert isinstance(by_name, CancelRequested)
    assert isinstance(by_id, CancelRequested)
    assert (by_name.order_id, by_id.order_id) == (oid("a2", "o1"), oid("a1", "o1"))


@pytest.mark.parametrize("owners_kept", [False, True], ids=["ids-alone", "with-owners"])
def test_ids_used_before_they_were_scoped_stay_used(owners_kept: bool) -> None:
    # A snapshot taken before ids were scoped by account holds the ids as they were sent (and,
    # from when owners were kept, who sent each); the API then sent a client order id as the
    # id the exchange now derives from it.
    feed = Feed()
    feed.send_all([funds("d1", "a1", 1_000), funds("d2", "a2", 1_000)])
    data = feed.stage.snapshot()
    sent = {"o1": "a1", oid("a1", "api-1"): "a1", "o2": "a2"}
    data["order_ids"] = sent if owners_kept else sorted(sent)
    data["deposit_ids"] = ["d1"]
    old = RiskStage.restore(default_catalogue(), data)
    stamp = EventStamp("t", 0, 9, 1_009)

    again = [
        old.handle(place("o1", "a1", "buy", 100, 1), stamp),
        old.handle(place("api-1", "a1", "buy", 100, 1), stamp),
        old.handle(funds("d1", "a1", 5), stamp),
        old.handle(place("o2", "a1", "buy", 100, 1), stamp),
    ]

    assert [getattr(e, "reason", None) for e in again] == [
        RejectReason.DUPLICATE_ORDER_ID,
        RejectReason.DUPLICATE_ORDER_ID,
        RejectReason.DUPLICATE_DEPOSIT_ID,
        # a2's id of then is no longer a1's to fear, once the snapshot says whose it was.
        None if owners_kept else RejectReason.DUPLICATE_ORDER_ID,
    ]
    assert RiskStage.restore(default_catalogue(), old.snapshot()).state_hash() == old.state_hash()


def test_deposits_are_credited() -> None:
    feed = Feed()

    funded = feed.send(funds("d1", "a1", 1_000))
    deposited = feed.send(capacity("d2", "p1", 8, symbol=CPU))

    assert funded == FundsDeposited(
        event_id="t:0:0:0",
        ts=1_000,
        deposit_id="d1",
        account_id="a1",
        amount=1_000,
        currency="CNY",
    )
    assert deposited == CapacityDeposited(
        event_id="t:0:1:0", ts=1_001, deposit_id="d2", account_id="p1", symbol=CPU, quantity=8
    )
    assert feed.stage.accounts.cash["a1"] == Balance(available=1_000, held=0)
    assert feed.stage.accounts.capacity[("p1", CPU)] == Balance(available=8, held=0)


def test_accepted_buy_holds_its_cash() -> None:
    feed = Feed()
    feed.send(funds("d1", "a1", 10_000))

    event = feed.send(place("o1", "a1", "buy", 1_230, 8))

    assert event == OrderAccepted(
        event_id="t:0:1:0",
        ts=1_001,
        order_id=oid("a1", "o1"),
        account_id="a1",
        symbol=H100,
        side="buy",
        price=1_230,
        quantity=8,
    )
    assert feed.stage.accounts.cash["a1"] == Balance(available=160, held=9_840)


def test_buy_for_exactly_the_available_cash_is_accepted() -> None:
    feed = Feed()
    feed.send(funds("d1", "a1", 9_840))

    assert isinstance(feed.send(place("o1", "a1", "buy", 1_230, 8)), OrderAccepted)
    assert feed.stage.accounts.cash["a1"] == Balance(available=0, held=9_840)
    assert isinstance(feed.send(place("o2", "a1", "buy", 10, 1)), OrderRejected)


def test_accepted_sell_holds_its_capacity() -> None:
    feed = Feed()
    feed.send(capacity("d1", "p1", 5, symbol=CPU))

    event = feed.send(place("s1", "p1", "sell", 7, 5, symbol=CPU))

    assert isinstance(event, OrderAccepted)
    assert feed.stage.accounts.capacity[("p1", CPU)] == Balance(available=0, held=5)


def test_cancel_order_is_forwarded_with_the_order_symbol() -> None:
    feed = Feed()
    feed.send(capacity("d1", "p1", 5, symbol=CPU))
    feed.send(place("s1", "p1", "sell", 7, 5, symbol=CPU))
    before = feed.stage.state_hash()

    event = feed.send(cancel("s1", "p1"))

    assert event == CancelRequested(
        event_id="t:0:2:0", ts=1_002, order_id=oid("p1", "s1"), account_id="p1", symbol=CPU
    )
    # The hold stays until matching confirms the cancel.
    assert feed.stage.state_hash() == before
    assert feed.stage.accounts.capacity[("p1", CPU)] == Balance(available=0, held=5)


def _traded(price: int, quantity: int) -> TradeExecuted:
    return TradeExecuted(
        event_id="m:0:0:0",
        ts=2_000,
        trade_id=f"{H100}:1",
        symbol=H100,
        price=price,
        quantity=quantity,
        buy_order_id=oid("a1", "b1"),
        sell_order_id=oid("p1", "s1"),
        buyer_id="a1",
        seller_id="p1",
        aggressor="buy",
    )


def _cancelled(order_id: str, account_id: str, side: Side, remaining: int) -> OrderCancelled:
    return OrderCancelled(
        event_id="m:0:1:0",
        ts=2_001,
        order_id=order_id,
        account_id=account_id,
        symbol=H100,
        side=side,
        remaining=remaining,
        reason=CancelReason.REQUESTED,
    )


FED_BACK = EventStamp("cx.commands", 0, 900, 2_000)
"""Where outcomes fed back from matching are read (they decide no fee concessions here)."""


def _owns_all(_: str) -> bool:
    return True


def test_a_trade_read_in_each_account_partition_settles_each_side_once() -> None:
    # One risk process reading the buyer's and the seller's partitions sees the trade twice;
    # each read settles only the side of the account that partition owns.
    feed = Feed()
    feed.send_all(
        [
            funds("d1", "a1", 10_000),
            capacity("d2", "p1", 6),
            place("b1", "a1", "buy", 120, 5),
            place("s1", "p1", "sell", 100, 6),
        ]
    )
    trade = _traded(price=100, quantity=5)

    feed.stage.apply_outcome(trade, lambda account: account == "a1", FED_BACK)
    feed.stage.apply_outcome(trade, lambda account: account == "p1", FED_BACK)

    accounts = feed.stage.accounts
    assert accounts.cash["a1"] == Balance(available=9_500, held=0)
    # A risk partition keeps only its own accounts' cash: the payment is escrowed until
    # delivery, and the escrow belongs to no partition.
    assert "p1" not in accounts.cash
    assert accounts.ledger == {}
    assert accounts.capacity[("p1", H100)] == Balance(available=0, held=1)
    assert accounts.open_orders[oid("p1", "s1")].remaining == 1


def test_trade_fed_back_settles_both_sides() -> None:
    feed = Feed()
    feed.send_all(
        [
            funds("d1", "a1", 10_000),
            capacity("d2", "p1", 6),
            place("b1", "a1", "buy", 120, 5),
            place("s1", "p1", "sell", 100, 6),
        ]
    )

    feed.stage.apply_outcome(_traded(price=100, quantity=5), _owns_all, FED_BACK)

    accounts = feed.stage.accounts
    assert accounts.cash["a1"] == Balance(available=9_500, held=0)
    assert "p1" not in accounts.cash
    assert accounts.capacity[("p1", H100)] == Balance(available=0, held=1)
    assert accounts.positions == {("a1", H100): 5}
    assert sorted(accounts.open_orders) == [oid("p1", "s1")]
    filled = feed.send(cancel("b1", "a1"))
    assert isinstance(filled, CancelRejected)
    assert filled.reason == RejectReason.ORDER_NOT_OPEN
    assert feed.send(cancel(oid("a1", "b1"), "p1")).reason == RejectReason.NOT_ORDER_OWNER
    # p1's own "b1" is another name: it never placed one.
    assert feed.send(cancel("b1", "p1")).reason == RejectReason.UNKNOWN_ORDER


def test_a_filled_order_stays_known_as_its_accounts_through_a_snapshot() -> None:
    feed = Feed()
    feed.send_all([funds("d1", "a1", 10_000), capacity("d2", "p1", 6)])
    feed.send_all([place("b1", "a1", "buy", 120, 5), place("s1", "p1", "sell", 100, 6)])
    feed.stage.apply_outcome(_traded(price=100, quantity=5), _owns_all, FED_BACK)
    restored = RiskStage.restore(default_catalogue(), feed.stage.snapshot())
    assert restored.state_hash() == feed.stage.state_hash()
    stamp = EventStamp("t", 0, 99, 3_000)
    assert restored.handle(cancel("b1", "a1"), stamp).reason == RejectReason.ORDER_NOT_OPEN

    # A snapshot of before owners were kept listed the ids alone: it still restores, and its
    # closed orders answer as unknown, as they did then. The owners are part of the hash.
    legacy = {**feed.stage.snapshot(), "order_ids": ["b1", "s1"]}
    old = RiskStage.restore(default_catalogue(), legacy)
    assert old.handle(cancel("b1", "a1"), stamp).reason == RejectReason.UNKNOWN_ORDER
    assert old.state_hash() != feed.stage.state_hash()


def test_cancel_fed_back_releases_the_remainder() -> None:
    feed = Feed()
    feed.send_all(
        [
            funds("d1", "a1", 10_000),
            capacity("d2", "p1", 6),
            place("b1", "a1", "buy", 120, 5),
            place("s1", "p1", "sell", 100, 6),
        ]
    )
    feed.stage.apply_outcome(_traded(price=110, quantity=2), _owns_all, FED_BACK)

    for cancelled in (
        _cancelled(oid("a1", "b1"), "a1", "buy", remaining=3),
        _cancelled(oid("p1", "s1"), "p1", "sell", remaining=4),
    ):
        feed.stage.apply_outcome(cancelled, _owns_all, FED_BACK)

    accounts = feed.stage.accounts
    assert accounts.cash["a1"] == Balance(available=10_000 - 220, held=0)
    assert "p1" not in accounts.cash
    assert accounts.capacity[("p1", H100)] == Balance(available=4, held=0)
    assert accounts.open_orders == {}


def test_reject_malformed_reports_the_source_and_changes_nothing() -> None:
    stage = RiskStage(default_catalogue())
    before = stage.state_hash()

    event = stage.reject_malformed("commands:2:17", "bad json", EventStamp("t", 0, 17, 5))

    assert event == CommandRejected(
        event_id="t:0:17:0",
        ts=5,
        reason=RejectReason.MALFORMED,
        message="bad json",
        source="commands:2:17",
    )
    assert stage.state_hash() == before


SESSION: list[Command] = [
    funds("d1", "a1", 50_000),
    funds("d2", "a2", 5_000),
    capacity("d3", "p1", 10),
    capacity("d4", "p1", 4, symbol=CPU),
    place("b1", "a1", "buy", 1_200, 10),
    place("b2", "a2", "buy", 1_000, 5),
    place("s1", "p1", "sell", 1_100, 6),
    place("s2", "p1", "sell", 3, 4, symbol=CPU),
    cancel("b1", "a2"),
    cancel("b2", "a2"),
    funds("d1", "a1", 1),
    place("b3", "a1", "buy", 1_001, 1),
]


def test_state_hash_is_a_function_of_the_commands() -> None:
    first, second = Feed(), Feed()
    first.send_all(SESSION)
    second.send_all(SESSION)

    assert first.stage.state_hash() == second.stage.state_hash()

    second.send(funds("d5", "a2", 1))

    assert first.stage.state_hash() != second.stage.state_hash()


def test_state_hash_sees_order_and_deposit_ids() -> None:
    first, second = Feed(), Feed()
    first.send(funds("d1", "a1", 100))
    second.send(funds("d2", "a1", 100))

    assert first.stage.accounts.cash == second.stage.accounts.cash
    assert first.stage.state_hash() != second.stage.state_hash()


def test_same_commands_and_stamps_give_byte_identical_outputs() -> None:
    runs = []
    for _ in range(2):
        feed = Feed()
        runs.append([encode(event) for event in feed.send_all(SESSION)])

    assert runs[0] == runs[1]
    assert [type(e).__name__ for e in Feed().send_all(SESSION)] == [
        "FundsDeposited",
        "FundsDeposited",
        "CapacityDeposited",
        "CapacityDeposited",
        "OrderAccepted",
        "OrderAccepted",
        "OrderAccepted",
        "OrderAccepted",
        "CancelRejected",
        "CancelRequested",
        "DepositRejected",
        "OrderRejected",
    ]
