"""A programme report counts what vouchers bought in the unit it is sold in: a week strip's
cards count every one of its 168 hours as card-hours, card-hours and core-hours are never added
together, and what the vouchers paid for is compared per card-hour, a strip included, with
what was bought without them in the same contracts. The account's invoice list gives a strip's
quantity in card-hours, as its VAT invoice does."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import pytest
from pypdf import PdfReader

from cx.settings import Settings
from exchange.domain.catalogue import CHINA_STANDARD_TIME, to_utc_ms
from settlement.reports import report_csv
from tests.e2e.grants import granted, uscc_of
from tests.e2e.harness import LogClock, RunningExchange, running_exchange, settle

pytestmark = pytest.mark.e2e

WEEK = "H100-80G.GZ.W20271206"
HOUR = "H100-80G.GZ.20271130T02"
CORES = "CPU.GZ.20271130T02"
TRADING = to_utc_ms(datetime(2027, 11, 29, 10, tzinfo=CHINA_STANDARD_TIME))
YEAR_2027 = (1_798_761_600_000, 1_830_297_600_000)


async def _post(
    exchange: RunningExchange, account: str, path: str, body: Any, role: str = "buyer"
) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def _order(symbol: str, side: str, price: int, quantity: int, **more: Any) -> dict[str, Any]:
    return {"symbol": symbol, "side": side, "price": price, "quantity": quantity, **more}


async def test_a_strip_counts_its_card_hours_and_units_stay_apart(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings.model_copy(
        update={"listings": "H100-80G.GZ,CPU.GZ", "listing_days": 2, "term_days": 14}
    )
    async with running_exchange(settings, LogClock(TRADING)) as exchange:
        programme = {
            "programme_id": "gz", "issuer": "贵阳市", "budget": 1_000_000, "rate_bps": 3_000,
            "cap_per_contract": 1_000_000, "cap_per_enterprise": 1_000_000, "regions": ["GZ"],
            "valid_from": 0, "valid_until": YEAR_2027[1],
        }  # fmt: skip
        admin = await exchange.as_("city", "programme_admin")
        assert (await admin.post("/v1/programmes", json=programme)).status_code == 201
        await granted(exchange, "city", "gz", "sme", 500_000, city="guiyang")
        # Holds a grant too, but buys without the voucher: a purchase the subsidy did not pay.
        await granted(exchange, "city", "gz", "other", 500_000, city="guiyang")
        cash = {"kind": "cash", "amount": 1_000_000}
        for account, role in (("p1", "provider"), ("sme", "buyer"), ("other", "buyer")):
            await _post(exchange, account, f"/v1/accounts/{account}/deposits", cash, role)
        for symbol, quantity in ((WEEK, 10), (HOUR, 5), (CORES, 100)):
            capacity = {"kind": "capacity", "symbol": symbol, "quantity": quantity}
            await _post(exchange, "p1", "/v1/accounts/p1/deposits", capacity, "provider")
        await settle(exchange.runtime)
        for symbol, price, quantity in ((WEEK, 1_010, 6), (HOUR, 1_000, 2), (CORES, 20, 50)):
            ask = _order(symbol, "sell", price, quantity)
            await _post(exchange, "p1", "/v1/orders", ask, "provider")
        await settle(exchange.runtime)
        # The holder: 4 cards of the week and 2 card-hours with the voucher, 50 core-hours.
        for symbol, price, quantity in ((WEEK, 1_010, 4), (HOUR, 1_000, 2), (CORES, 20, 50)):
            bid = _order(symbol, "buy", price, quantity, voucher="gz")
            await _post(exchange, "sme", "/v1/orders", bid)
        # Another buyer, without the voucher: 2 cards of the same week.
        await _post(exchange, "other", "/v1/orders", _order(WEEK, "buy", 1_010, 2))
        await settle(exchange.runtime)

        report = (await admin.get("/v1/programmes/gz/report")).json()
        # 30% of 4 x 168 x 10.10 元 = 2,036.16 元; of 2 x 10.00 元 = 6.00 元; of 50 x 0.20 元.
        assert report["committed"] == 203_616 + 600 + 300
        city = report["city"]
        assert city["compute_per_yuan"] == [
            # 674 card-hours for 2,042.16 元: 0.330 a 元, rounded down.
            {"unit": "card-hour", "units": 674, "voucher": 204_216, "units_per_yuan": "0.330"},
            {"unit": "core-hour", "units": 50, "voucher": 300, "units_per_yuan": "16.666"},
        ]
        assert report["by_region"] == [
            {
                "name": "GZ",
                "purchases": 3,
                "units": {"card-hour": 674, "core-hour": 50},
                "gross": 678_720 + 2_000 + 1_000,
                "voucher": 204_516,
            }
        ]
        assert [(g["name"], g["units"]) for g in report["by_class"]] == [
            ("CPU", {"core-hour": 50}),
            ("H100-80G", {"card-hour": 674}),
        ]
        # The enterprise as it registered, with its credit code and account.
        assert [
            (g["name"], g["uscc"], g["account_id"], g["units"]) for g in report["by_enterprise"]
        ] == [("sme 科技有限公司", uscc_of("sme"), "sme", {"card-hour": 674, "core-hour": 50})]
        assert [
            (e["name"], e["uscc"], e["account_id"]) for e in city["spread"]["by_enterprise"]
        ] == [("sme 科技有限公司", uscc_of("sme"), "sme")]
        # Subsidised purchases against the others of the same contracts, per card-hour: the
        # other buyer's 2 cards of the week are 336 card-hours at 10.10 元 each.
        assert [
            {k: p[k] for k in ("symbol", "holder_units", "holder_avg", "other_units", "other_avg")}
            for p in city["prices"]
        ] == [
            {
                "symbol": WEEK,
                "holder_units": 672,
                "holder_avg": 1_010,
                "other_units": 336,
                "other_avg": 1_010,
            }
        ]
        assert city["holder_premium_bps"] == 0
        lines = report_csv(report).splitlines()
        assert (
            "地区 region,购买笔数 purchases,卡时 card-hour,核时 core-hour,"
            "百万tokens million-tokens,总额(分) gross,算力券(分) voucher"
        ) in lines, lines
        assert "GZ,3,674,50,0,681720,204516" in lines, lines
        assert (
            "企业 enterprise,统一社会信用代码 credit code,账户 account,购买笔数 purchases,"
            "卡时 card-hour,核时 core-hour,百万tokens million-tokens,总额(分) gross,"
            "算力券(分) voucher"
        ) in lines, lines
        assert f"sme 科技有限公司,{uscc_of('sme')},sme,3,674,50,0,681720,204516" in lines, lines

        document = await admin.get("/v1/programmes/gz/report", params={"format": "pdf"})
        assert document.status_code == 200, document.text
        text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(document.content)).pages)
        assert "无可比较" not in text, text
        for figure in ("卡时 card-hour", "674", "0.330", "核时 core-hour", "16.666"):
            assert figure in text, (figure, text)

        invoices = (await (await exchange.as_("sme")).get("/v1/accounts/sme/invoices")).json()
        quantities = {
            line["symbol"]: (line["quantity"], line["unit"])
            for invoice in invoices["invoices"]
            for line in invoice["contracts"]
        }
        assert quantities == {WEEK: (672, "卡时"), HOUR: (2, "卡时"), CORES: (50, "核时")}
