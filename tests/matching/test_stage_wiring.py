"""The engine wired into the stages: order options, amends and operator commands end to end.

A tiny loop stands in for the log: commands go through the risk stage, what it approves through
the matching stage, and every fill, cancel, amend and decrement goes back to risk. A second
`Accounts` folds every event the way the settlement ledger does. Holds must always cover
exactly what the open orders need, and both ledgers must agree.
"""

from __future__ import annotations

import random
from typing import Any, get_args

from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import default_catalogue
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    AmendOrder,
    AmendRejected,
    AmendRequested,
    AuctionCompleted,
    BlockAccepted,
    CancelAllOrders,
    CancelAllRequested,
    CancelOrder,
    CancelReason,
    Command,
    ContractStateChanged,
    ControlMarket,
    DepositCapacity,
    DepositFunds,
    Event,
    EventStamp,
    OrderAmended,
    OrderCancelled,
    PlaceBlockOrder,
    PlaceOrder,
    TradeExecuted,
    exchange_order_id,
)
from exchange.domain.operators import OperatorSeal
from exchange.domain.risk import Outcome, RiskStage

CATALOGUE = default_catalogue()
SEAL = OperatorSeal([b"operator key of the stage wiring tests"])
FED_BACK = get_args(Outcome)
SYM = "H100-80G.GZ.20271201T00"
NEXT_HOUR = "H100-80G.GZ.20271201T01"


class Exchange:
    """Risk, matching and a settlement-style ledger, in one process, in log order."""

    def __init__(self, **market: Any) -> None:
        self.risk = RiskStage(CATALOGUE, SEAL)
        self.market = MarketStage(CATALOGUE, **market)
        self.ledger = Accounts()
        self.offset = 0
        self.ts = 1_000
        self.events: list[Event] = []

    def send(self, command: Command, dt: int = 1) -> list[Event]:
        self.ts += dt
        self.offset += 1
        decided = self.risk.handle(command, EventStamp("c", 0, self.offset, self.ts))
        out = [decided, *self.market.handle(decided, EventStamp("o", 0, self.offset, self.ts))]
        fed_back = EventStamp("f", 0, self.offset, self.ts)
        for event in out:
            self._settle(event)
            if isinstance(event, FED_BACK) and event.event_id.startswith("o:"):
                # No fee concessions are granted here: folding an outcome decides none.
                assert not self.risk.apply_outcome(event, lambda _: True, fed_back)
        self.events.extend(out)
        return out

    def _settle(self, event: Event) -> None:
        # Settlement's fold, restricted to participants' balances as a risk partition keeps.
        self.ledger.apply(event, lambda _: True)

    def check_holds(self) -> None:
        """Held cash and capacity equal what the open orders need, in both ledgers."""
        for accounts in (self.risk.accounts, self.ledger):
            cash: dict[str, int] = {}
            capacity: dict[tuple[str, str], int] = {}
            resale: dict[tuple[str, str], int] = {}
            for o in accounts.open_orders.values():
                key = (o.account_id, o.symbol)
                if o.side == "buy":
                    cash[o.account_id] = cash.get(o.account_id, 0) + o.price * o.remaining + o.extra
                elif o.backing == "entitlement":
                    resale[key] = resale.get(key, 0) + o.remaining
                else:
                    capacity[key] = capacity.get(key, 0) + o.remaining + o.extra
            for account, balance in accounts.cash.items():
                assert balance.held == cash.get(account, 0), account
                assert balance.available >= 0, account
            for key, balance in accounts.capacity.items():
                assert balance.held == capacity.get(key, 0), key
            assert {k: q for k, q in accounts.resale_held.items() if q} == resale
            for key, quantity in accounts.positions.items():
                assert 0 <= accounts.resale_held.get(key, 0) <= quantity, key
        assert self.risk.accounts.snapshot() == self.ledger.snapshot()
        resting = {
            o.order_id: o.remaining
            for book in self.market.books.values()
            for o in book.orders.values()
        }
        assert resting == {
            i: o.remaining for i, o in self.risk.accounts.open_orders.items() if o.remaining
        }


def operator(action: str, symbol: str = SYM, **fields: Any) -> ControlMarket:
    """A market control as the API sends it: signed with the operator key."""
    command = ControlMarket(operator_id="ops", action=action, symbol=symbol, **fields)  # type: ignore[arg-type]
    signed = SEAL.sign(command)
    assert isinstance(signed, ControlMarket)
    return signed


def funded(exchange: Exchange) -> Exchange:
    for account in ("buyer", "seller", "maker", "other"):
        exchange.send(DepositFunds(deposit_id=f"f-{account}", account_id=account, amount=10**7))
        for symbol in CATALOGUE.symbols:
            exchange.send(
                DepositCapacity(
                    deposit_id=f"c-{account}-{symbol}",
                    account_id=account,
                    symbol=symbol,
                    quantity=100,
                )
            )
    return exchange


def order(
    order_id: str, account: str, side: str, price: int, quantity: int, **options: Any
) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id,
        account_id=account,
        side=side,  # type: ignore[arg-type]
        price=price,
        quantity=quantity,
        **{"symbol": SYM, **options},
    )


def test_ioc_remainder_is_cancelled_and_its_hold_released() -> None:
    ex = funded(Exchange())
    ex.send(order("s1", "seller", "sell", 1800, 2))
    out = ex.send(order("b1", "buyer", "buy", 1800, 5, time_in_force="IOC"))
    assert [e.quantity for e in out if isinstance(e, TradeExecuted)] == [2]
    (cancelled,) = [e for e in out if isinstance(e, OrderCancelled)]
    assert (cancelled.remaining, cancelled.reason) == (3, CancelReason.UNFILLED_IOC)
    ex.check_holds()


def test_post_only_that_would_take_is_cancelled_with_its_reason() -> None:
    ex = funded(Exchange())
    ex.send(order("s1", "seller", "sell", 1800, 2))
    out = ex.send(order("b1", "buyer", "buy", 1800, 1, post_only=True))
    assert [(type(e).__name__, getattr(e, "reason", None)) for e in out[1:]] == [
        ("OrderCancelled", CancelReason.POST_ONLY_WOULD_TAKE)
    ]
    ex.check_holds()


def test_amend_up_holds_more_and_amend_down_releases() -> None:
    ex = funded(Exchange())
    ex.send(order("b1", "buyer", "buy", 1700, 4))
    held = ex.risk.accounts.cash_of("buyer").held
    assert held == 1700 * 4
    out = ex.send(AmendOrder(order_id="b1", account_id="buyer", price=1750, quantity=6))
    assert isinstance(out[0], AmendRequested)
    assert out[0].extra_hold == 1750 * 6 - 1700 * 4
    assert any(isinstance(e, OrderAmended) and not e.kept_priority for e in out)
    assert ex.risk.accounts.cash_of("buyer").held == 1750 * 6
    ex.send(AmendOrder(order_id="b1", account_id="buyer", quantity=2))
    assert ex.risk.accounts.cash_of("buyer").held == 1750 * 2
    ex.check_holds()


def test_amend_that_matching_refuses_returns_the_extra_hold() -> None:
    ex = funded(Exchange())
    ex.send(order("s1", "seller", "sell", 1800, 1))
    ex.send(order("b1", "buyer", "buy", 1700, 1, post_only=True))
    out = ex.send(AmendOrder(order_id="b1", account_id="buyer", price=1800))
    assert isinstance(out[-1], AmendRejected)
    assert out[-1].extra_hold == 100
    assert ex.risk.accounts.cash_of("buyer").held == 1700
    ex.check_holds()


def test_self_trade_decrement_releases_what_it_takes_off() -> None:
    ex = funded(Exchange())
    ex.send(order("s1", "maker", "sell", 1800, 5, stp_group="desk"))
    out = ex.send(order("b1", "maker", "buy", 1800, 2, stp_group="desk", stp_mode="decrement"))
    assert [type(e).__name__ for e in out[1:]] == ["OrderReduced", "OrderCancelled", "BookChanged"]
    ex.check_holds()


def test_a_self_trade_group_is_its_accounts_own() -> None:
    # Naming another account's group (or the account itself, its default group) does not
    # let an order cancel or reduce that account's resting orders: they trade.
    ex = funded(Exchange())
    ex.send(order("s1", "maker", "sell", 1800, 5, stp_group="desk"))
    ex.send(order("s2", "seller", "sell", 1810, 5))
    for group, price in (("desk", 1800), ("seller", 1810)):
        out = ex.send(
            order(f"b-{group}", "other", "buy", price, 1, stp_group=group, stp_mode="cancel_both")
        )
        assert [type(e).__name__ for e in out] == [
            "OrderAccepted",
            "TradeExecuted",
            "BookChanged",
        ], group
    ex.check_holds()


def test_operator_halt_and_resume_reopen_through_an_auction() -> None:
    ex = funded(Exchange())
    ex.send(operator("halt"))
    ex.send(order("s1", "seller", "sell", 1790, 3))
    ex.send(order("b1", "buyer", "buy", 1810, 2))
    out = ex.send(operator("resume"))
    auction = [e for e in out if isinstance(e, AuctionCompleted)]
    assert [(a.price, a.volume) for a in auction] == [(1790, 2)]
    assert [e.state for e in out if isinstance(e, ContractStateChanged)] == ["continuous"]
    ex.check_holds()


def test_gate_closure_expires_orders_when_the_clock_ticks() -> None:
    ex = funded(Exchange(gate_closure_ms=3_600_000))
    ex.send(order("b1", "buyer", "buy", 1700, 4))
    delivery = 1_827_590_400_000  # 2027-12-01T00:00 CST in ms since the epoch
    out = ex.send(ControlMarket(operator_id="clock", action="tick", symbol=SYM), dt=delivery)
    cancelled = [e for e in out if isinstance(e, OrderCancelled)]
    assert [(c.order_id, c.reason) for c in cancelled] == [
        (exchange_order_id("buyer", "b1"), CancelReason.GATE_CLOSURE)
    ]
    assert ex.risk.accounts.cash_of("buyer").held == 0
    ex.check_holds()


def test_random_flow_keeps_holds_exact_and_both_ledgers_equal() -> None:
    rng = random.Random(3)
    ex = funded(Exchange(band=200, protection=100))
    ids: list[str] = []
    for n in range(1_500):
        roll = rng.random()
        account = rng.choice(["buyer", "seller", "maker", "other"])
        if roll < 0.6:
            options = rng.choice(
                [
                    {},
                    {},
                    {"time_in_force": "IOC"},
                    {"time_in_force": "FOK"},
                    {"time_in_force": "GTD", "expire_at": ex.ts + rng.randint(1, 5_000)},
                    {"all_or_none": True},
                    {"post_only": True},
                    {"min_quantity": 2},
                    {"order_type": "market"},
                    {"stp_group": "desk", "stp_mode": rng.choice(["decrement", "cancel_both"])},
                ]
            )
            order_id = f"o{n}"
            ids.append(order_id)
            price = 10 * rng.randint(170, 190)
            ex.send(
                order(
                    order_id,
                    account,
                    rng.choice(["buy", "sell"]),
                    price,
                    rng.randint(1, 6),
                    **options,
                ),
                dt=rng.randint(0, 500),
            )
        elif roll < 0.8 and ids:
            order_id = rng.choice(ids)
            owner = ex.risk.accounts.open_orders.get(order_id)
            ex.send(
                CancelOrder(order_id=order_id, account_id=owner.account_id if owner else account)
            )
        elif roll < 0.95 and ids:
            order_id = rng.choice(ids)
            owner = ex.risk.accounts.open_orders.get(order_id)
            ex.send(
                AmendOrder(
                    order_id=order_id,
                    account_id=owner.account_id if owner else account,
                    price=rng.choice([None, 10 * rng.randint(170, 190)]),
                    quantity=rng.choice([None, rng.randint(1, 8)]),
                )
            )
        elif roll < 0.97:
            order_id = f"k{n}"
            ids.append(order_id)
            side = rng.choice(["buy", "sell"])
            ex.send(block(order_id, account, side, 10 * rng.randint(175, 185), rng.randint(1, 3)))
        elif roll < 0.98:
            ex.send(CancelAllOrders(account_id=account))
        else:
            action = rng.choice(["halt", "resume", "tick"])
            ex.send(operator(action))
        ex.check_holds()
    kinds = {type(e).__name__ for e in ex.events}
    assert {
        "TradeExecuted",
        "OrderAmended",
        "OrderCancelled",
        "AmendRequested",
        "BlockAccepted",
        "CancelAllRequested",
    } <= kinds


def test_kill_switch_cancels_every_open_order_of_the_account() -> None:
    ex = funded(Exchange())
    ex.send(order("b1", "buyer", "buy", 1700, 4))
    ex.send(order("b2", "buyer", "buy", 1690, 1))
    ex.send(order("s1", "seller", "sell", 1900, 2))
    out = ex.send(CancelAllOrders(account_id="buyer"))
    assert isinstance(out[0], CancelAllRequested)
    assert out[0].symbols == [SYM]
    cancelled = [e for e in out if isinstance(e, OrderCancelled)]
    assert [(c.order_id, c.reason) for c in cancelled] == [
        (exchange_order_id("buyer", "b1"), CancelReason.KILL_SWITCH),
        (exchange_order_id("buyer", "b2"), CancelReason.KILL_SWITCH),
    ]
    assert ex.risk.accounts.cash_of("buyer").held == 0
    again = ex.send(CancelAllOrders(account_id="buyer"))
    assert [type(e).__name__ for e in again] == ["CancelRejected"]
    ex.check_holds()


def block(order_id: str, account: str, side: str, price: int, quantity: int) -> PlaceBlockOrder:
    return PlaceBlockOrder(
        order_id=order_id,
        account_id=account,
        symbols=[SYM, NEXT_HOUR],
        side=side,  # type: ignore[arg-type]
        price=price,
        quantity=quantity,
    )


def test_a_block_fills_in_every_hour_within_its_average_price() -> None:
    ex = funded(Exchange())
    ex.send(order("s0", "seller", "sell", 1750, 3))
    ex.send(
        PlaceOrder(
            order_id="s1",
            account_id="seller",
            symbol=NEXT_HOUR,
            side="sell",
            price=1850,
            quantity=3,
        )
    )
    # (1750 + 1850) / 2 = 1800 <= 1800: filled in both hours.
    out = ex.send(block("k1", "buyer", "buy", 1800, 3))
    assert isinstance(out[0], BlockAccepted)
    trades = [(t.symbol, t.price, t.quantity) for t in out if isinstance(t, TradeExecuted)]
    assert trades == [(SYM, 1750, 3), (NEXT_HOUR, 1850, 3)]
    assert ex.risk.accounts.positions[("buyer", SYM)] == 3
    assert ex.risk.accounts.positions[("buyer", NEXT_HOUR)] == 3
    assert ex.risk.accounts.cash_of("buyer").held == 0
    ex.check_holds()


def test_a_block_that_cannot_fill_every_hour_is_cancelled_whole() -> None:
    ex = funded(Exchange())
    ex.send(order("b0", "buyer", "buy", 1800, 5))
    out = ex.send(block("k1", "seller", "sell", 1700, 4))
    (cancelled,) = [e for e in out if isinstance(e, OrderCancelled)]
    assert (cancelled.remaining, cancelled.reason) == (8, CancelReason.BLOCK_NOT_FILLED)
    assert not [e for e in out if isinstance(e, TradeExecuted)]
    for symbol in (SYM, NEXT_HOUR):
        assert ex.risk.accounts.capacity_of("seller", symbol).held == 0
    ex.check_holds()


def test_a_block_over_hours_that_are_not_consecutive_is_refused() -> None:
    ex = funded(Exchange())
    out = ex.send(
        PlaceBlockOrder(
            order_id="k1",
            account_id="buyer",
            symbols=[SYM, "CPU.GZ.20271201T01"],
            side="buy",
            price=1800,
            quantity=1,
        )
    )
    assert [type(e).__name__ for e in out] == ["OrderRejected"]
    assert out[0].reason == "invalid_block"  # type: ignore[attr-defined]


def test_a_scheduled_day_ahead_auction_accepts_a_block_through_the_stages() -> None:
    ex = funded(Exchange(pre_open=True))
    ex.send(order("s0", "seller", "sell", 1760, 3))
    ex.send(
        PlaceOrder(
            order_id="s1",
            account_id="seller",
            symbol=NEXT_HOUR,
            side="sell",
            price=1840,
            quantity=3,
        )
    )
    ex.send(block("k1", "buyer", "buy", 1800, 3))
    out = ex.send(operator("schedule_auction", at=ex.ts + 1_000, symbols=[SYM, NEXT_HOUR]))
    assert not [e for e in out if isinstance(e, AuctionCompleted)]
    # The next record after the auction time runs it: (1760 + 1840) / 2 = 1800 <= 1800.
    out = ex.send(ControlMarket(operator_id="clock", action="tick", symbol=SYM), dt=1_000)
    results = [(a.symbol, a.price, a.volume) for a in out if isinstance(a, AuctionCompleted)]
    assert results == [(SYM, 1760, 3), (NEXT_HOUR, 1840, 3)]
    assert [t.aggressor for t in out if isinstance(t, TradeExecuted)] == [None, None]
    assert ex.risk.accounts.positions[("buyer", NEXT_HOUR)] == 3
    ex.check_holds()
