"""While settlement is stopped, the API answers what it knows of an order it accepted: GET
says `accepted`, not yet settled (not 404 as if it never was), and a cancel or amend of one that
has closed meanwhile says settlement has not recorded it (409 `order_not_settled`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.problems import problem_title
from cx.runtime import Stage
from tests.e2e.harness import RunningExchange, eventually, running_exchange, settings_for

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
WITHOUT_SETTLEMENT: tuple[Stage, ...] = ("risk", "matching", "api")


async def _funded(exchange: RunningExchange) -> None:
    buyer = await exchange.as_("buyer-1")
    seller = await exchange.as_("seller-1", "provider")
    cash = await buyer.post(
        "/v1/accounts/buyer-1/deposits", json={"kind": "cash", "amount": 100_000}
    )
    assert cash.status_code == 201, cash.text
    capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 5}
    units = await seller.post("/v1/accounts/seller-1/deposits", json=capacity)
    assert units.status_code == 201, units.text


async def test_an_accepted_order_is_answered_while_settlement_is_stopped(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path), stages=WITHOUT_SETTLEMENT) as exchange:
        await _funded(exchange)
        buyer = await exchange.as_("buyer-1")
        seller = await exchange.as_("seller-1", "provider")
        bid = {"symbol": GZ0, "side": "buy", "price": 1_800, "quantity": 2, "client_order_id": "b1"}
        placed = await buyer.post("/v1/orders", json=bid)
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]

        resting = await buyer.get(f"/v1/orders/{order_id}")
        assert resting.status_code == 200, resting.text
        body = resting.json()
        assert (body["status"], body["settled"], body["market_status"]) == (
            "accepted",
            False,
            "open",
        )
        assert (body["symbol"], body["side"], body["price"], body["quantity"]) == (
            GZ0,
            "buy",
            1_800,
            2,
        )
        assert (body["filled"], body["client_order_id"]) == (0, "b1")
        assert body["delivery_start"] == "2027-12-01T00:00:00+08:00"
        assert body["detail"].startswith("订单已受理, 尚未结算")
        # Another account learns nothing of it.
        assert (await seller.get(f"/v1/orders/{order_id}")).json()[
            "type"
        ] == "/problems/unknown_order"

        ask = {"symbol": GZ0, "side": "sell", "price": 1_800, "quantity": 2}
        assert (await seller.post("/v1/orders", json=ask)).status_code == 201

        async def filled() -> bool:
            answer = (await buyer.get(f"/v1/orders/{order_id}")).json()
            return bool(answer.get("market_status") == "filled")

        await eventually(filled, what="the buy to fill")
        seen = (await buyer.get(f"/v1/orders/{order_id}")).json()
        assert (seen["status"], seen["settled"], seen["filled"]) == ("accepted", False, 2)

        for answer in (
            await buyer.patch(f"/v1/orders/{order_id}", json={"quantity": 1}),
            await buyer.delete(f"/v1/orders/{order_id}"),
            await buyer.delete("/v1/orders/b1"),  # by the name it was placed as
        ):
            assert answer.status_code == 409, answer.text
            assert answer.json()["type"] == "/problems/order_not_settled"
            assert answer.json()["title"] == problem_title("order_not_settled")

        never = await buyer.get("/v1/orders/o-0000000000000000000000000000000000000000")
        assert never.status_code == 404
        assert (await buyer.delete("/v1/orders/never-placed")).status_code == 404
