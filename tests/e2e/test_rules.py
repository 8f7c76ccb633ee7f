"""The market rules in the settings reach the running matching stage and its replay alike."""

from __future__ import annotations

from pathlib import Path

from settlement.audit import audit
from tests.e2e.harness import running_exchange, settings_for, settle

GZ0 = "H100-80G.GZ.20271201T00"


async def test_gate_closure_from_the_settings_closes_contracts_live_and_in_replay(
    tmp_path: Path,
) -> None:
    # Closing a million minutes before delivery: every contract is past its gate already.
    settings = settings_for(tmp_path).model_copy(update={"gate_closure_minutes": 10**6})
    async with running_exchange(settings) as exchange:
        buyer = await exchange.as_("b")
        deposit = {"kind": "cash", "amount": 100_000}
        assert (await buyer.post("/v1/accounts/b/deposits", json=deposit)).status_code == 201
        order = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 1}
        assert (await buyer.post("/v1/orders", json=order)).status_code == 201
        await settle(exchange.runtime)
        (placed,) = (await buyer.get("/v1/orders", params={"account_id": "b"})).json()
        assert (placed["status"], placed["reason"]) == ("cancelled", "contract_closed")
        account = (await buyer.get("/v1/accounts/b")).json()
        assert account["cash"] == {"available": 100_000, "held": 0}
        # The replay applies the same rules: it rebuilds the same state and finds nothing amiss.
        report = await audit(
            exchange.runtime.store,
            exchange.runtime.catalogue,
            exchange.runtime.topics.market_partitions,
        )
        assert report.discrepancies == []
        assert exchange.runtime.catalogue.rules.gate_closure_ms == 10**6 * 60_000


async def test_by_default_contracts_trade_until_an_hour_before_delivery(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert settings.market_rules().gate_closure_ms == 60 * 60_000
    async with running_exchange(settings) as exchange:
        buyer = await exchange.as_("b")
        await buyer.post("/v1/accounts/b/deposits", json={"kind": "cash", "amount": 100_000})
        order = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 1}
        assert (await buyer.post("/v1/orders", json=order)).status_code == 201
        await settle(exchange.runtime)
        (placed,) = (await buyer.get("/v1/orders", params={"account_id": "b"})).json()
        assert placed["status"] == "open"
