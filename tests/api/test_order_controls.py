"""Amend in place, the kill switch, block orders and operators' market controls, through the API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from settlement.schema import events
from tests.e2e.harness import RunningExchange, eventually, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
GZ1 = "H100-80G.GZ.20271201T01"
YRD0 = "H100-80G.YRD.20271201T00"


@pytest.fixture
async def exchange(tmp_path: Path) -> AsyncIterator[RunningExchange]:
    async with running_exchange(settings_for(tmp_path)) as running:
        yield running


async def _funded_buyer(exchange: RunningExchange, amount: int = 100_000) -> httpx.AsyncClient:
    buyer = await exchange.as_("b")
    deposit = {"kind": "cash", "amount": amount}
    assert (await buyer.post("/v1/accounts/b/deposits", json=deposit)).status_code == 201
    return buyer


async def test_an_amend_that_only_reduces_keeps_priority_and_releases_the_hold(
    exchange: RunningExchange,
) -> None:
    buyer = await _funded_buyer(exchange)
    placed = await buyer.post(
        "/v1/orders", json={"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 5}
    )
    order_id = placed.json()["order_id"]
    smaller = await buyer.patch(f"/v1/orders/{order_id}", json={"quantity": 3})
    assert smaller.json() == {
        "order_id": order_id,
        "status": "amended",
        "price": 1800,
        "remaining": 3,
        "kept_priority": True,
    }
    repriced = await buyer.patch(f"/v1/orders/{order_id}", json={"price": 1790})
    assert (repriced.json()["price"], repriced.json()["kept_priority"]) == (1790, False)
    await settle(exchange.runtime)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["cash"] == {"available": 100_000 - 3 * 1790, "held": 3 * 1790}

    too_big = await buyer.patch(f"/v1/orders/{order_id}", json={"quantity": 1000})
    assert too_big.status_code == 422
    assert too_big.json()["type"] == "/problems/insufficient_funds"
    assert too_big.json()["title"] == "资金不足 insufficient funds"
    off_tick = await buyer.patch(f"/v1/orders/{order_id}", json={"price": 1795})
    assert off_tick.status_code == 422
    unknown = await buyer.patch("/v1/orders/nope", json={"price": 1800})
    assert unknown.status_code == 404
    empty = await buyer.patch(f"/v1/orders/{order_id}", json={})
    assert empty.status_code == 422
    assert "an amend needs a new price or quantity" in empty.text
    await settle(exchange.runtime)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["cash"] == {"available": 100_000 - 3 * 1790, "held": 3 * 1790}


async def test_a_bonded_sell_amended_above_what_its_bond_covers_is_refused_and_kept(
    tmp_path: Path,
) -> None:
    """With a 10% bond a sell at 0.10 holds 1 fen a unit: amending it to 20.00 is refused
    (it would sell behind 1 fen what needs 200), and the order keeps its price and its bond."""
    async with running_exchange(settings_for(tmp_path, CX_BOND_BPS=1_000)) as exchange:
        buyer = await _funded_buyer(exchange)
        provider = await exchange.as_("p", "provider")
        for deposit in (
            {"kind": "cash", "amount": 1_000},
            {"kind": "capacity", "symbol": GZ0, "quantity": 4},
        ):
            assert (await provider.post("/v1/accounts/p/deposits", json=deposit)).status_code == 201
        ask = {"symbol": GZ0, "side": "sell", "price": 10, "quantity": 4, "post_only": True}
        placed = await provider.post("/v1/orders", json=ask)
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]

        raised = await provider.patch(f"/v1/orders/{order_id}", json={"price": 2000})

        assert raised.status_code == 422, raised.text
        problem = raised.json()
        assert problem["type"] == "/problems/amend_above_bond"
        assert problem["title"] == (
            "改价超出交付保证金所保的价格 above the price the delivery bond covers"
        )
        assert problem["order_id"] == order_id
        assert problem["detail"].startswith("有交付保证金的卖单改价不能高于保证金所保的 10 分")
        assert problem["detail"].endswith("cancel and place a new order at the new price")
        await settle(exchange.runtime)
        account = (await provider.get("/v1/accounts/p")).json()
        assert account["cash"] == {"available": 1_000 - 4, "held": 4}
        row = (await provider.get(f"/v1/orders/{order_id}")).json()
        assert (row["status"], row["price"], row["quantity"], row["filled"]) == ("open", 10, 4, 0)

        bought = await buyer.post(
            "/v1/orders", json={"symbol": GZ0, "side": "buy", "price": 2000, "quantity": 3}
        )
        assert bought.status_code == 201, bought.text
        await settle(exchange.runtime)
        fills = (await buyer.get("/v1/fills")).json()
        assert [(f["price"], f["quantity"]) for f in fills] == [(10, 3)]
        account = (await provider.get("/v1/accounts/p")).json()
        assert account["cash"] == {"available": 1_000 - 4, "held": 1}


async def test_an_order_that_is_no_longer_open_answers_409_and_one_never_seen_404(
    tmp_path: Path,
) -> None:
    # Ticks every 0.2 s so a GTD order expires within the test.
    async with running_exchange(settings_for(tmp_path, CX_TICK_SECONDS=0.2)) as exchange:
        buyer = await _funded_buyer(exchange)
        provider = await exchange.as_("p", "provider")
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 10}
        assert (await provider.post("/v1/accounts/p/deposits", json=capacity)).status_code == 201

        async def place(client: httpx.AsyncClient, **order: object) -> str:
            placed = await client.post("/v1/orders", json={"symbol": GZ0, **order})
            assert placed.status_code == 201, placed.text
            return str(placed.json()["order_id"])

        sold = await place(provider, side="sell", price=1800, quantity=2)
        filled = await place(buyer, side="buy", price=1800, quantity=2)
        cancelled = await place(buyer, side="buy", price=1700, quantity=1)
        assert (await buyer.delete(f"/v1/orders/{cancelled}")).status_code == 200
        unfilled_ioc = await place(buyer, side="buy", price=1600, quantity=1, time_in_force="IOC")
        expired = await place(
            buyer,
            side="buy",
            price=1600,
            quantity=1,
            time_in_force="GTD",
            expire_at=time.time_ns() // 1_000_000 + 300,
        )
        still_open = await place(buyer, side="buy", price=1500, quantity=1)

        async def all_closed() -> bool:
            for order_id in (filled, cancelled, unfilled_ioc, expired):
                row = await buyer.get(f"/v1/orders/{order_id}")
                # Settled closed: before, GET answers `accepted` (not settled) or `open`.
                if row.status_code != 200 or row.json()["status"] in ("open", "accepted"):
                    return False
            return True

        await eventually(all_closed, "the filled, cancelled and expired orders to close")
        for client, order_id in [(provider, sold)] + [
            (buyer, o) for o in (filled, cancelled, unfilled_ioc, expired)
        ]:
            for answer in (
                await client.delete(f"/v1/orders/{order_id}"),
                await client.patch(f"/v1/orders/{order_id}", json={"price": 1400}),
            ):
                assert answer.status_code == 409, (order_id, answer.text)
                assert answer.json()["type"] == "/problems/order_not_open"
                assert answer.json()["order_id"] == order_id

        # An id never used and another account's order, open or closed, answer alike.
        other = await exchange.as_("c")
        for client, order_id in (
            (buyer, "o-never-placed"),
            (other, filled),
            (other, still_open),
            (buyer, sold),
        ):
            for answer in (
                await client.delete(f"/v1/orders/{order_id}"),
                await client.patch(f"/v1/orders/{order_id}", json={"price": 1400}),
            ):
                assert answer.status_code == 404, (order_id, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.json()["type"] == "/problems/unknown_order"
                assert "has no open order" in answer.json()["detail"]
        await settle(exchange.runtime)
        row = (await buyer.get(f"/v1/orders/{still_open}")).json()
        assert (row["status"], row["price"]) == ("open", 1500), "the refusals changed nothing"


async def test_the_kill_switch_cancels_every_open_order_of_the_account(
    exchange: RunningExchange,
) -> None:
    buyer = await _funded_buyer(exchange)
    for symbol in (GZ0, YRD0):
        order = {"symbol": symbol, "side": "buy", "price": 1700, "quantity": 2}
        assert (await buyer.post("/v1/orders", json=order)).status_code == 201
    answer = (await buyer.delete("/v1/orders")).json()
    assert answer["status"] == "requested"
    assert sorted(answer["symbols"]) == sorted([GZ0, YRD0])
    await settle(exchange.runtime)
    orders = (await buyer.get("/v1/orders", params={"account_id": "b"})).json()
    assert [o["status"] for o in orders] == ["cancelled", "cancelled"]
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["cash"] == {"available": 100_000, "held": 0}
    # One copy per orders partition (GZ and YRD hours are on two), each stored under its own
    # id with its partition's contracts, so a replay cancels each where its partition did.
    async with exchange.runtime.store.engine.connect() as connection:
        stored = (
            await connection.execute(
                select(events.c.event_id, events.c.data).where(
                    events.c.type == "CancelAllRequested"
                )
            )
        ).all()
    assert sorted(tuple(row.data["here"]) for row in stored) == [(GZ0,), (YRD0,)]
    assert len({row.event_id for row in stored}) == 2


async def test_a_block_order_fills_in_every_hour_or_none(exchange: RunningExchange) -> None:
    provider = await exchange.as_("p", "provider")
    for symbol in (GZ0, GZ1):
        capacity = {"kind": "capacity", "symbol": symbol, "quantity": 10}
        assert (await provider.post("/v1/accounts/p/deposits", json=capacity)).status_code == 201
        ask = {"symbol": symbol, "side": "sell", "price": 1800, "quantity": 4}
        assert (await provider.post("/v1/orders", json=ask)).status_code == 201
    buyer = await _funded_buyer(exchange)
    block = {"symbols": [GZ0, GZ1], "side": "buy", "price": 1800, "quantity": 4}
    placed = await buyer.post("/v1/block-orders", json=block)
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "accepted"
    await settle(exchange.runtime)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["positions"] == [
        {"symbol": GZ0, "quantity": 4},
        {"symbol": GZ1, "quantity": 4},
    ]
    across = {"symbols": [GZ0, YRD0], "side": "buy", "price": 1800, "quantity": 1}
    refused = await buyer.post("/v1/block-orders", json=across)
    assert refused.status_code == 422
    unknown = {"symbols": ["NOPE"], "side": "buy", "price": 1800, "quantity": 1}
    refused = await buyer.post("/v1/block-orders", json=unknown)
    assert (refused.status_code, refused.json()["type"]) == (422, "/problems/unknown_contract")


async def test_operators_halt_and_resume_a_contract_with_who_and_why_in_the_log(
    exchange: RunningExchange,
) -> None:
    operator = await exchange.operator()
    buyer = await _funded_buyer(exchange)
    refused = await buyer.post(
        f"/v1/admin/contracts/{GZ0}/halt", json={"reason": "not an operator"}
    )
    assert refused.status_code == 403
    halted = await operator.post(f"/v1/admin/contracts/{GZ0}/halt", json={"reason": "drill"})
    assert halted.status_code == 200, halted.text
    # The answer is matching's decision: the contract halted.
    assert (halted.json()["status"], halted.json()["state"]) == ("applied", "halted")
    no_reason = await operator.post(f"/v1/admin/contracts/{GZ0}/resume", json={})
    assert no_reason.status_code == 422
    resumed = await operator.post(f"/v1/admin/contracts/{GZ0}/resume", json={"reason": "done"})
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["status"], resumed.json()["state"]) == ("applied", "continuous")
    await settle(exchange.runtime)
    async with exchange.runtime.store.engine.connect() as connection:
        rows = await connection.execute(
            select(events.c.data).where(events.c.type == "MarketControlRequested")
        )
        recorded = [(r.data["action"], r.data["operator_id"], r.data["reason"]) for r in rows]
    operator_id = recorded[0][1]
    assert recorded == [("halt", operator_id, "drill"), ("resume", operator_id, "done")]
    async with exchange.runtime.store.engine.connect() as connection:
        states = [
            r.data["state"]
            for r in await connection.execute(
                select(events.c.data).where(events.c.type == "ContractStateChanged")
            )
        ]
    assert "halted" in states


async def test_an_order_answered_with_its_result_says_whether_it_rests_fills_or_is_cancelled(
    exchange: RunningExchange,
) -> None:
    buyer = await _funded_buyer(exchange)
    provider = await exchange.as_("p", "provider")
    capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 10}
    assert (await provider.post("/v1/accounts/p/deposits", json=capacity)).status_code == 201
    result = {"answer": "result"}

    ask = {"symbol": GZ0, "side": "sell", "price": 1800, "quantity": 3}
    rests = await provider.post("/v1/orders", params=result, json=ask)
    assert rests.status_code == 201, rests.text
    assert rests.json()["status"] == "accepted"
    assert rests.json()["result"] == {
        "status": "open",
        "filled": 0,
        "remaining": 3,
        "reason": None,
        "fills": [],
    }

    bid = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 2}
    filled = (await buyer.post("/v1/orders", params=result, json=bid)).json()["result"]
    assert (filled["status"], filled["filled"], filled["remaining"]) == ("filled", 2, 0)
    assert [(f["price"], f["quantity"]) for f in filled["fills"]] == [(1800, 2)]

    ioc = {**bid, "quantity": 4, "time_in_force": "IOC"}
    partial = (await buyer.post("/v1/orders", params=result, json=ioc)).json()["result"]
    assert (partial["status"], partial["filled"]) == ("cancelled", 1)
    assert partial["reason"] is not None
    assert [f["quantity"] for f in partial["fills"]] == [1]

    # Without the option the answer is the risk stage's alone, as before.
    plain = await buyer.post("/v1/orders", json={**bid, "price": 1700})
    assert "result" not in plain.json() or plain.json()["result"] is None
    unknown = await buyer.post("/v1/orders", params={"answer": "fills"}, json=bid)
    assert unknown.status_code == 422


async def test_the_catalogue_shows_each_contracts_market_state(
    exchange: RunningExchange,
) -> None:
    operator = await exchange.operator()
    reason = {"reason": "drill"}
    assert (await operator.post(f"/v1/admin/contracts/{GZ0}/halt", json=reason)).is_success

    async def state_is(wanted: str) -> bool:
        return (await exchange.client.get(f"/v1/contracts/{GZ0}")).json()["state"] == wanted

    await eventually(lambda: state_is("halted"), "the halt in the catalogue")
    again = await operator.post(f"/v1/admin/contracts/{GZ0}/halt", json=reason)
    assert again.status_code == 422, again.text
    assert again.json()["type"] == "/problems/not_continuous"
    assert again.json()["detail"].startswith(f"合约 {GZ0} 已处于暂停状态, 无需再次暂停")
    assert f"{GZ0} is already halted" in again.json()["detail"]
    assert (await operator.post(f"/v1/admin/contracts/{GZ0}/resume", json=reason)).is_success
    await eventually(lambda: state_is("continuous"), "the resumption in the catalogue")
    again = await operator.post(f"/v1/admin/contracts/{GZ0}/resume", json=reason)
    assert again.json()["type"] == "/problems/not_halted"
    assert again.json()["detail"].startswith(f"合约 {GZ0} 未暂停, 无需恢复")
