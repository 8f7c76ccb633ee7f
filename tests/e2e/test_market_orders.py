"""Market orders through the API in the default configuration (no protection band): limited
only by their own cap, not by the last price."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"


async def test_a_market_buy_takes_asks_above_the_last_price_up_to_its_cap(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert settings.market_rules().protection == 0
    async with running_exchange(settings) as exchange:
        provider = await exchange.as_("p", "provider")
        buyer = await exchange.as_("b")
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 15}
        assert (await provider.post("/v1/accounts/p/deposits", json=capacity)).status_code == 201
        cash = {"kind": "cash", "amount": 100_000}
        assert (await buyer.post("/v1/accounts/b/deposits", json=cash)).status_code == 201

        def limit(side: str, price: int, quantity: int) -> dict[str, object]:
            return {"symbol": GZ0, "side": side, "price": price, "quantity": quantity}

        for client, body in (
            (provider, limit("sell", 1_000, 5)),
            (buyer, limit("buy", 1_000, 5)),  # the last price: 10.00
            (provider, limit("sell", 1_010, 10)),
        ):
            assert (await client.post("/v1/orders", json=body)).status_code == 201
        market = {**limit("buy", 1_050, 10), "order_type": "market"}
        placed = await buyer.post("/v1/orders", json=market)
        assert placed.status_code == 201, placed.text
        await settle(exchange.runtime)

        order = (await buyer.get(f"/v1/orders/{placed.json()['order_id']}")).json()
        assert (order["status"], order["filled"], order["reason"]) == ("filled", 10, None)
        trades = (await exchange.client.get(f"/v1/contracts/{GZ0}/trades")).json()
        assert [(t["price"], t["quantity"], t["aggressor"]) for t in trades] == [
            (1_010, 10, "buy"),
            (1_000, 5, "buy"),
        ]
        book = (await exchange.client.get(f"/v1/contracts/{GZ0}/book")).json()
        assert book["asks"] == []
        account = (await buyer.get("/v1/accounts/b")).json()
        assert account["cash"] == {"available": 100_000 - 5_000 - 10_100, "held": 0}
