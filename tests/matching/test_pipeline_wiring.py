"""The new order types through the whole embedded pipeline: log, risk, matching, settlement.

Amends, blocks, IOC, self-trade decrement and the kill switch are sent as commands; once the
pipeline has settled, the ledger projection's holds must equal what its open orders need, the
orders table must show the amended and block orders, and a replay of the event store must
rebuild exactly the live state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import (
    AmendOrder,
    CancelAllOrders,
    DepositCapacity,
    DepositFunds,
    PlaceBlockOrder,
    PlaceOrder,
    exchange_order_id,
)
from settlement.projections import orders as orders_table
from settlement.replay import replay
from settlement.service import SettlementRunner
from settlement.sql_store import open_event_store
from tests.e2e.harness import running_exchange, settings_for, settle

H0 = "H100-80G.GZ.20271201T00"
H1 = "H100-80G.GZ.20271201T01"


def place(
    order_id: str, account: str, symbol: str, side: str, price: int, qty: int, **options: Any
) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id,
        account_id=account,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        price=price,
        quantity=qty,
        **options,
    )


SENT = {
    exchange_order_id(account, name): name
    for account, name in (
        ("seller", "s0"),
        ("seller", "s1"),
        ("buyer", "b-ioc"),
        ("buyer", "b-rest"),
        ("seller", "s2"),
        ("buyer", "k1"),
        ("desk-a", "m1"),
        ("desk-a", "m2"),
    )
}
"""The exchange's ids of the orders the test places, and the ids it sends them as."""


async def test_new_order_types_settle_and_replay_to_the_live_state(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with running_exchange(settings) as exchange:
        runtime = exchange.runtime

        async def send(command: Any) -> None:
            # Accounts sit on different risk partitions: settle so each step sees the last.
            await runtime.submit(command)
            await settle(runtime)

        for account in ("buyer", "seller", "desk-a", "desk-b"):
            await send(DepositFunds(deposit_id=f"f-{account}", account_id=account, amount=10**7))
            for symbol in (H0, H1):
                await send(
                    DepositCapacity(
                        deposit_id=f"c-{account}-{symbol}",
                        account_id=account,
                        symbol=symbol,
                        quantity=50,
                    )
                )
        await send(place("s0", "seller", H0, "sell", 1750, 5))
        await send(place("s1", "seller", H1, "sell", 1850, 5))
        await send(place("b-ioc", "buyer", H0, "buy", 1750, 8, time_in_force="IOC"))
        await send(place("b-rest", "buyer", H0, "buy", 1700, 4))
        await send(AmendOrder(order_id="b-rest", account_id="buyer", price=1720, quantity=6))
        await send(place("s2", "seller", H0, "sell", 1760, 3))
        await send(PlaceBlockOrder(order_id="k1", account_id="buyer", symbols=[H0, H1], side="buy",
                                   price=1810, quantity=3))  # fmt: skip
        await send(place("m1", "desk-a", H1, "sell", 1840, 5, stp_group="desk"))
        await send(
            place("m2", "desk-a", H1, "buy", 1900, 2, stp_group="desk", stp_mode="decrement")
        )
        await send(CancelAllOrders(account_id="seller"))
        await settle(runtime)
        settlement = runtime.running["settlement"]
        assert isinstance(settlement, SettlementRunner)
        live = settlement.projection.state
        live_hash = live.state_hash()
        accounts = live.accounts
        async with runtime.store.engine.connect() as connection:
            stored = await connection.execute(select(orders_table))
            # The exchange knows each order by its id scoped by account: name them as sent.
            rows = {SENT[row.order_id]: row for row in stored}

    # Holds equal what the open orders need.
    needed: dict[str, int] = {}
    for order in accounts.open_orders.values():
        if order.side == "buy":
            needed[order.account_id] = (
                needed.get(order.account_id, 0) + order.price * order.remaining
            )
    for account, balance in accounts.cash.items():
        assert balance.held == needed.get(account, 0), account
    assert all(b.held == 0 for (a, _), b in accounts.capacity.items() if a != "desk-a")

    # IOC: 5 traded at 1750, 3 cancelled. The amend re-priced b-rest to 1720 x 6.
    assert (rows["b-ioc"].filled, rows["b-ioc"].status) == (5, "cancelled")
    assert (rows["b-rest"].price, rows["b-rest"].quantity) == (1720, 6)
    # The block bought 3 in each hour: 1760 + 1850 = 3610 <= 2 x 1810.
    assert (rows["k1"].symbol, rows["k1"].quantity, rows["k1"].filled) == ("H100-80G.GZ", 6, 6)
    assert accounts.positions[("buyer", H0)] == 5 + 3
    assert accounts.positions[("buyer", H1)] == 3
    # Decrement: m2 (2) and m1 (5) cancel 2 against each other; m1 keeps 3.
    assert rows["m2"].status == "cancelled"
    m1 = accounts.open_orders[exchange_order_id("desk-a", "m1")]
    assert (rows["m1"].quantity, m1.remaining) == (3, 3)
    # The kill switch cancelled the seller's resting orders (s1's remaining 2).
    assert rows["s1"].reason == "kill_switch"

    store = open_event_store(settings.event_store_url())
    result = await replay(store, default_catalogue(), partitions=settings.market_partitions)
    await store.close()
    assert result.state.state_hash() == live_hash
