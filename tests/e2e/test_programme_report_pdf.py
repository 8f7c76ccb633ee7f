"""The programme report for the city through the API when only grant holders bought: the
comparison of holders' and others' prices says there is nothing to compare, in words."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfReader

from tests.e2e.grants import granted
from tests.e2e.harness import running_exchange, settings_for, settle
from tests.e2e.test_vouchers import GZ0, YEAR_2027

pytestmark = pytest.mark.e2e


async def test_a_report_with_no_other_buyers_says_so_rather_than_none(tmp_path: Path) -> None:
    async with running_exchange(settings_for(tmp_path)) as exchange:
        programme = {
            "programme_id": "gz", "issuer": "贵阳市", "budget": 1_000_000, "rate_bps": 3_000,
            "cap_per_contract": 100_000, "cap_per_enterprise": 100_000, "regions": ["GZ"],
            "valid_from": 0, "valid_until": YEAR_2027[1],
        }  # fmt: skip
        admin = await exchange.as_("city", "programme_admin")
        assert (await admin.post("/v1/programmes", json=programme)).status_code == 201
        await granted(exchange, "city", "gz", "sme", 30_000, city="guiyang")
        for account, role, body in (
            ("sme", "buyer", {"kind": "cash", "amount": 50_000}),
            ("dc", "provider", {"kind": "capacity", "symbol": GZ0, "quantity": 2}),
        ):
            client = await exchange.as_(account, role)
            deposit = await client.post(f"/v1/accounts/{account}/deposits", json=body)
            assert deposit.status_code in (200, 201), deposit.text
        ask = {"symbol": GZ0, "side": "sell", "price": 2_000, "quantity": 2}
        placed = await (await exchange.as_("dc", "provider")).post("/v1/orders", json=ask)
        assert placed.json()["status"] == "accepted", placed.text
        bid = {"symbol": GZ0, "side": "buy", "price": 2_000, "quantity": 2, "voucher": "gz"}
        placed = await (await exchange.as_("sme")).post("/v1/orders", json=bid)
        assert placed.json()["status"] == "accepted", placed.text
        await settle(exchange.runtime)

        report = (await admin.get("/v1/programmes/gz/report")).json()
        assert report["committed"] == 1_200
        assert report["city"]["holder_premium_bps"] is None
        document = await admin.get("/v1/programmes/gz/report", params={"format": "pdf"})
        assert document.status_code == 200, document.text
        text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(document.content)).pages)
        assert "None" not in text, text
        assert "无可比较 no other buyers" in text, text
