"""Many clients buying with vouchers and cancelling at once never oversubscribe a programme.

Enterprises in different commands partitions share one programme; each places and cancels
voucher orders concurrently through the API, against providers' asks on the same contracts.
Afterwards, from the event store: the programme paid no more than its budget, no enterprise more
than its grant, nothing is left reserved, every balance is non-negative, and the audit (voucher
totals included) and the ledger audit are clean.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from cx.settings import Settings
from settlement.audit import audit, audit_ledger
from tests.e2e.grants import apply, register
from tests.e2e.harness import RunningExchange, running_exchange, settle

pytestmark = pytest.mark.e2e

SYMBOLS = ["H100-80G.YRD.20271201T00", "H100-80G.YRD.20271201T01"]
BUYERS = [f"sme-{n}" for n in range(8)]
BUDGET = 20_000
GRANT = 3_000


async def _post(exchange: RunningExchange, account: str, role: str, path: str, body: object) -> int:
    client = await exchange.as_(account, role)
    return (await client.post(path, json=body)).status_code


async def test_concurrent_voucher_orders_never_oversubscribe_the_programme(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        programme = {
            "programme_id": "yrd", "issuer": "Shanghai", "budget": BUDGET, "rate_bps": 3_000,
            "cap_per_contract": 900, "cap_per_enterprise": GRANT, "regions": ["YRD"],
            "valid_from": 0, "valid_until": 1_830_297_600_000,
        }  # fmt: skip
        assert await _post(exchange, "city", "programme_admin", "/v1/programmes", programme) == 201
        for buyer in BUYERS:
            await register(exchange, buyer, city="shanghai")
            applied = await apply(exchange, buyer, "yrd", GRANT, buyer)
            assert applied.status_code == 201, applied.text
            grant = {"application_id": buyer, "limit": GRANT}
            path = "/v1/programmes/yrd/grants"
            status = await _post(exchange, "city", "programme_admin", path, grant)
            # 8 grants of 3,000 ask more than the 20,000 budget: the last ones are refused.
            assert status in (201, 422)
            body = {"kind": "cash", "amount": 200_000}
            path = f"/v1/accounts/{buyer}/deposits"
            assert await _post(exchange, buyer, "buyer", path, body) == 201
        for symbol in SYMBOLS:
            body = {"kind": "capacity", "symbol": symbol, "quantity": 200}
            await _post(exchange, "dc", "provider", "/v1/accounts/dc/deposits", body)
            ask = {"symbol": symbol, "side": "sell", "price": 1_000, "quantity": 120}
            assert await _post(exchange, "dc", "provider", "/v1/orders", ask) == 201

        async def trader(buyer: str, seed: int) -> None:
            rng = random.Random(seed)
            client = await exchange.as_(buyer)
            for _ in range(12):
                symbol = rng.choice(SYMBOLS)
                price = rng.choice([900, 1_000, 1_000])  # some rest, most trade
                order = {"symbol": symbol, "side": "buy", "price": price,
                         "quantity": rng.randint(1, 4), "voucher": "yrd"}  # fmt: skip
                placed = await client.post("/v1/orders", json=order)
                assert placed.status_code in (201, 422), placed.text
                if placed.status_code == 201 and rng.random() < 0.5:
                    await client.delete(f"/v1/orders/{placed.json()['order_id']}")

        await asyncio.gather(*(trader(buyer, n) for n, buyer in enumerate(BUYERS)))
        for buyer in BUYERS:
            await (await exchange.as_(buyer)).delete("/v1/orders")
        await settle(exchange.runtime)

        reader = await exchange.as_("city", "programme_admin")
        report = (await reader.get("/v1/programmes/yrd/report")).json()
        assert report["committed"] > 0, "the vouchers should have paid something"
        assert report["committed"] <= report["granted"] <= BUDGET
        assert report["reserved"] == 0
        assert report["remaining"] == BUDGET - report["committed"] + report["clawed_back"]
        for enterprise in report["by_enterprise"]:
            assert enterprise["voucher"] <= GRANT, enterprise
        accounts = exchange.runtime.running["settlement"].projection.accounts  # type: ignore[attr-defined]
        assert all(b.available >= 0 and b.held >= 0 for b in accounts.cash.values())
        assert all(g.remaining >= 0 and g.reserved == 0 for g in accounts.grants.values())
        store = exchange.runtime.store
        assert (
            await audit(
                store, exchange.runtime.catalogue, exchange.runtime.topics.market_partitions
            )
        ).discrepancies == []
        assert (
            await audit_ledger(
                store, exchange.runtime.catalogue, exchange.runtime.topics.market_partitions
            )
        ).discrepancies == []
