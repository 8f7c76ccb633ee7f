"""Ids that ledger accounts are named after: a programme's id holds no `:` (the API and risk
refuse one), so `grant:PROGRAMME:ACCOUNT` names one grant whatever the account id holds; and
reports and statements take ids literally, `_` and `:` included. On the embedded default and
on Kafka and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from cx.settings import Settings
from settlement.audit import audit, audit_ledger
from tests.e2e.grants import granted
from tests.e2e.harness import RunningExchange, running_exchange, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
YEAR_2027 = (1_798_761_600_000, 1_830_297_600_000)
ADMIN = "city-admin"


def _programme(programme_id: str, budget: int) -> dict[str, Any]:
    return {
        "programme_id": programme_id,
        "issuer": "Guangzhou",
        "budget": budget,
        "rate_bps": 3_000,
        "cap_per_contract": 1_000,
        "cap_per_enterprise": budget,
        "regions": ["GZ"],
        "cities": ["hangzhou"],
        "valid_from": YEAR_2027[0] - 400 * 86_400_000,
        "valid_until": YEAR_2027[1],
    }


async def _post(exchange: RunningExchange, account: str, role: str, path: str, body: Any) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _report(exchange: RunningExchange, programme: str) -> Any:
    client = await exchange.as_(ADMIN, "programme_admin")
    response = await client.get(f"/v1/programmes/{programme}/report")
    assert response.status_code == 200, response.text
    return response.json()


async def test_ids_with_separators_and_wildcards_keep_each_grant_its_own(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        admin = await exchange.as_(ADMIN, "programme_admin")
        refused = await admin.post("/v1/programmes", json=_programme("cc:dd", 100_000))
        assert refused.status_code == 422, refused.text
        assert "programme_id" in refused.text
        operator = await exchange.as_("ops", "operator")
        relief = {
            "concession_id": "relief:b4", "account_ids": ["b4"], "discount_bps": 5_000,
            "budget_per_account": 10, "valid_from": 0, "valid_until": YEAR_2027[1],
        }  # fmt: skip
        refused = await operator.post("/v1/admin/concessions", json=relief)
        assert refused.status_code == 422, refused.text
        assert "concession_id" in refused.text
        assert (await admin.get("/v1/programmes/cc:dd/report")).status_code == 404

        # `_` is LIKE's any character: programme gz_26's ledger accounts match gz-26's.
        for programme in ("gz-26", "gz_26"):
            body = _programme(programme, 100_000)
            await _post(exchange, ADMIN, "programme_admin", "/v1/programmes", body)
        # Account `dd:b4`'s grant is `grant:gz_26:dd:b4`, which `grant:%:b4` also matches.
        await granted(exchange, ADMIN, "gz-26", "b4", 20_000)
        await granted(exchange, ADMIN, "gz_26", "dd:b4", 30_000)
        for account in ("b4", "dd:b4"):
            body = {"kind": "cash", "amount": 100_000}
            await _post(exchange, account, "buyer", f"/v1/accounts/{account}/deposits", body)
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 10}
        await _post(exchange, "dc", "provider", "/v1/accounts/dc/deposits", capacity)
        ask = {"symbol": GZ0, "side": "sell", "price": 1_000, "quantity": 10}
        await _post(exchange, "dc", "provider", "/v1/orders", ask)
        for account, programme, quantity in (("b4", "gz-26", 1), ("dd:b4", "gz_26", 2)):
            bid = {
                "symbol": GZ0, "side": "buy", "price": 1_000, "quantity": quantity,
                "voucher": programme,
            }  # fmt: skip
            answer = await _post(exchange, account, "buyer", "/v1/orders", bid)
            assert answer["status"] == "accepted", answer
        await settle(exchange.runtime)

        # 30% of 1,000 a card-hour: 300 of gz-26's for b4, 600 of gz_26's for dd:b4.
        reports = {p: await _report(exchange, p) for p in ("gz-26", "gz_26")}
        assert {
            p: (r["granted"], r["committed"], r["remaining"], r["by_enterprise"][0]["account_id"])
            for p, r in reports.items()
        } == {"gz-26": (20_000, 300, 99_700, "b4"), "gz_26": (30_000, 600, 99_400, "dd:b4")}
        day = reports["gz-26"]["burn_down"][0]["day"]
        month = f"{day[:4]}-{day[4:6]}"
        for account, voucher, gross in (("b4", 300, 1_000), ("dd:b4", 600, 2_000)):
            client = await exchange.as_(account)
            answer = await client.get(
                "/v1/statements", params={"month": month, "account_id": account}
            )
            assert answer.status_code == 200, answer.text
            statement = answer.json()
            assert statement["lines"]["vouchers"] == voucher, statement
            assert statement["lines"]["other"] == 0, statement
            assert statement["split"]["government"] == voucher, statement
            assert statement["net_change"] == 100_000 - gross + voucher, statement
        store, catalogue = exchange.runtime.store, exchange.runtime.catalogue
        partitions = exchange.runtime.topics.market_partitions
        assert (await audit(store, catalogue, partitions)).discrepancies == []
        assert (await audit_ledger(store, catalogue, partitions)).discrepancies == []
