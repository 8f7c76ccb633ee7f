"""The platform's discount pool through the API: the operator funds it, a grant approved after
carries its part, and a purchase paid with the voucher costs the firm the gross amount less the
government's voucher less the platform's discount, to the fen; the journal stays whole."""

from __future__ import annotations

from typing import Any

import pytest

from cx.settings import Settings
from tests.e2e.grants import granted
from tests.e2e.harness import RunningExchange, running_exchange, settle
from tests.e2e.test_vouchers import GZ0, YEAR_2027

pytestmark = pytest.mark.e2e


async def _post(exchange: RunningExchange, account: str, role: str, path: str, body: Any) -> Any:
    client = await exchange.as_(account, role)
    return await client.post(path, json=body)


async def test_a_purchase_is_shared_by_the_voucher_the_platform_and_the_firm(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        pool = {"pool_id": "gz-platform", "discount_bps": 1_000, "budget": 100_000}
        unknown = await _post(
            exchange, "ops", "operator", "/v1/programmes/nowhere/discount-pools", pool
        )
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["type"] == "/problems/unknown_programme"
        programme = {
            "programme_id": "gz", "issuer": "Guiyang", "budget": 1_000_000, "rate_bps": 3_000,
            "cap_per_contract": 100_000, "cap_per_enterprise": 100_000, "regions": ["GZ"],
            "valid_from": 0, "valid_until": YEAR_2027[1],
        }  # fmt: skip
        created = await _post(exchange, "city", "programme_admin", "/v1/programmes", programme)
        assert created.status_code == 201, created.text
        not_operator = await _post(
            exchange, "city", "programme_admin", "/v1/programmes/gz/discount-pools", pool
        )
        assert not_operator.status_code == 403, not_operator.text
        funded = await _post(exchange, "ops", "operator", "/v1/programmes/gz/discount-pools", pool)
        assert funded.status_code == 201, funded.text
        assert funded.json()["id"] == "gz/gz-platform"
        await granted(exchange, "city", "gz", "sme", 30_000, city="guiyang")
        for account, role, body in (
            ("sme", "buyer", {"kind": "cash", "amount": 50_000}),
            ("dc", "provider", {"kind": "capacity", "symbol": GZ0, "quantity": 10}),
        ):
            deposit = await _post(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
            assert deposit.status_code in (200, 201), deposit.text
        ask = {"symbol": GZ0, "side": "sell", "price": 2_000, "quantity": 10}
        placed = await _post(exchange, "dc", "provider", "/v1/orders", ask)
        assert placed.json()["status"] == "accepted", placed.text
        bid = {"symbol": GZ0, "side": "buy", "price": 2_000, "quantity": 5, "voucher": "gz"}
        placed = await _post(exchange, "sme", "buyer", "/v1/orders", bid)
        assert placed.json()["status"] == "accepted", placed.text
        await settle(exchange.runtime)

        account = (await (await exchange.as_("sme")).get("/v1/accounts/sme")).json()
        # 5 x 2,000 = 10,000 gross: the voucher pays 30% (3,000), the platform 10% (1,000) from
        # sme's part of the pool (30,000 x 10/30 = 10,000), the firm 6,000.
        assert account["cash"]["available"] + account["cash"]["held"] == 50_000 - 6_000

        # The account's invoice says what the firm paid: the platform's discount is the
        # platform's concession on the purchase, as the statement and the VAT invoice count it.
        invoices = (await (await exchange.as_("sme")).get("/v1/accounts/sme/invoices")).json()
        assert invoices["total"] == {
            "quantity": {"卡时": 5}, "gross": 10_000, "voucher": 3_000, "fee": 0,
            "concession": 1_000, "paid": 6_000,
        }  # fmt: skip
