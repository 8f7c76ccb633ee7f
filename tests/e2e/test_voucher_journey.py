"""A small firm's voucher from application to statement, through the API, on the embedded
default and on Kafka and PostgreSQL, every figure to the fen.

Guiyang's programme pays 30% of the contract amount; the platform funds a discount pool that
gives grant holders 5% more. A small firm registers with its unified social credit code and
applies; the administrator asks a question, the firm answers and the grant is approved. The
firm buys a two-hour block with its voucher. The provider delivers one of the first hour's two
card-hours: the undelivered one is refunded with the bond's penalty, and its share of the
voucher is clawed back. The month's statements, the order's statement (the cost split three
ways) and its VAT invoice say so.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import pytest
from pypdf import PdfReader

from cx.settings import Settings
from exchange.domain.catalogue import CHINA_STANDARD_TIME, to_utc_ms
from exchange.domain.messages import ControlMarket
from tests.e2e.harness import LogClock, RunningExchange, running_exchange, settle

pytestmark = pytest.mark.e2e

GZ0, GZ1 = "H100-80G.GZ.20271201T00", "H100-80G.GZ.20271201T01"
HOUR = 3_600_000
MIDNIGHT = to_utc_ms(datetime(2027, 12, 1, tzinfo=CHINA_STANDARD_TIME))
YEAR_2027 = (1_798_761_600_000, 1_830_297_600_000)
USCC = "91520100MA6H7J8K9U"
NAME = "贵阳小微算力科技有限公司"


async def _send(
    exchange: RunningExchange, account: str, role: str, path: str, body: Any
) -> dict[str, Any]:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _get(exchange: RunningExchange, account: str, path: str, **params: Any) -> Any:
    response = await (await exchange.as_(account)).get(path, params=params)
    assert response.status_code == 200, response.text
    return response


async def _tick(exchange: RunningExchange, clock: LogClock, at: int) -> None:
    clock.now_ms = at
    await exchange.runtime.submit(ControlMarket(operator_id="clock", action="tick", symbol=GZ0))
    await settle(exchange.runtime)


async def test_apply_approve_buy_a_block_with_a_voucher_short_delivery_clawback_statement(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings.model_copy(
        update={"fees": "H100-80G:0:10", "bond_bps": 1_000, "delivery_window_minutes": 60}
    )
    clock = LogClock(MIDNIGHT - 2 * HOUR)
    async with running_exchange(settings, clock) as exchange:
        admin, programme = "gy-admin", "/v1/programmes/guiyang"
        await _send(exchange, admin, "programme_admin", "/v1/programmes", {
            "programme_id": "guiyang", "issuer": "贵阳市大数据局", "budget": 100_000,
            "rate_bps": 3_000, "cap_per_contract": 10_000, "cap_per_enterprise": 100_000,
            "regions": ["GZ"], "cities": ["guiyang"], "valid_from": YEAR_2027[0],
            "valid_until": YEAR_2027[1],
        })  # fmt: skip
        pool = {"pool_id": "gy-platform", "discount_bps": 500, "budget": 10_000}
        await _send(exchange, "ops", "operator", f"{programme}/discount-pools", pool)

        bad = await (await exchange.as_("sme")).post(
            "/v1/accounts/sme/enterprise",
            json={"name": NAME, "uscc": USCC[:-1] + "W", "kind": "sme", "city": "guiyang"},
        )
        assert bad.status_code == 422
        assert bad.json()["type"] == "/problems/invalid_uscc"
        assert "expected 'U'" in bad.json()["detail"]
        enterprise = {"name": NAME, "uscc": USCC, "kind": "sme", "city": "guiyang"}
        await _send(exchange, "sme", "buyer", "/v1/accounts/sme/enterprise", enterprise)
        application = {"application_id": "gy-001", "amount": 50_000,
                       "intended_use": "微调 7B 模型用于客服 fine-tune a 7B model"}  # fmt: skip
        await _send(exchange, "sme", "buyer", f"{programme}/applications", application)
        base = f"{programme}/applications/gy-001"
        await _send(exchange, admin, "programme_admin", f"{base}/info-requests",
                    {"question": "每月需要多少卡时? card-hours a month?"})  # fmt: skip
        await _send(exchange, "sme", "buyer", f"{base}/supplements", {"answer": "约 400 卡时"})
        approval = {"application_id": "gy-001", "limit": 40_000}
        await _send(exchange, admin, "programme_admin", f"{programme}/grants", approval)
        await settle(exchange.runtime)
        reviewed = await (await exchange.as_(admin, "programme_admin")).get(
            f"{programme}/applications"
        )
        assert [(a["status"], a["granted"], a["uscc"], a["answer"]) for a in reviewed.json()] == [
            ("approved", 40_000, USCC, "约 400 卡时")
        ]

        for account, role, body in (
            ("sme", "buyer", {"kind": "cash", "amount": 50_000}),
            ("gz-dc", "provider", {"kind": "cash", "amount": 10_000}),
            ("gz-dc", "provider", {"kind": "capacity", "symbol": GZ0, "quantity": 2}),
            ("gz-dc", "provider", {"kind": "capacity", "symbol": GZ1, "quantity": 2}),
        ):
            await _send(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
        for symbol in (GZ0, GZ1):
            ask = {"symbol": symbol, "side": "sell", "price": 1_500, "quantity": 2}
            await _send(exchange, "gz-dc", "provider", "/v1/orders", ask)
        block = {"symbols": [GZ0, GZ1], "side": "buy", "price": 1_500, "quantity": 2,
                 "voucher": "guiyang"}  # fmt: skip
        placed = await _send(exchange, "sme", "buyer", "/v1/block-orders", block)
        assert placed["status"] == "accepted", placed
        order_id = placed["order_id"]
        await settle(exchange.runtime)

        # Delivery: one of GZ0's two card-hours, both of GZ1's; the windows then close.
        await _tick(exchange, clock, MIDNIGHT + HOUR)
        metering = {"symbol": GZ0, "buyer_id": "sme", "delivered": 1}
        await _send(exchange, "gz-dc", "provider", "/v1/deliveries/metering", metering)
        await _tick(exchange, clock, MIDNIGHT + 2 * HOUR)
        metering = {"symbol": GZ1, "buyer_id": "sme", "delivered": 2}
        await _send(exchange, "gz-dc", "provider", "/v1/deliveries/metering", metering)
        await _tick(exchange, clock, MIDNIGHT + 3 * HOUR + 1)

        # 4 card-hours at 15.00: 60.00 gross and a 0.1% taker fee of 0.03 an hour; the voucher
        # pays 30% (18.00), the platform's pool 5% (3.00). One card-hour undelivered: 15.00
        # refunded, the bond's 1.50 penalty, and its share of the voucher (4.50) clawed back.
        account = (await _get(exchange, "sme", "/v1/accounts/sme")).json()
        assert account["cash"] == {
            "available": 50_000 - 6_000 - 6 + 1_800 + 300 + 1_500 + 150 - 450,
            "held": 0,
        }
        november = (await _get(exchange, "sme", "/v1/statements", month="2027-11")).json()
        assert {k: v for k, v in november["lines"].items() if v} == {
            "deposits": 50_000, "purchases": 6_000, "fees": 6, "vouchers": 1_800,
            "platform_discounts": 300,
        }  # fmt: skip
        december = (await _get(exchange, "sme", "/v1/statements", month="2027-12")).json()
        assert {k: v for k, v in december["lines"].items() if v} == {
            "refunds": 1_500, "penalties_received": 150, "voucher_clawbacks": 450,
        }  # fmt: skip
        assert december["opening"] == november["closing"] == 50_000 - 6_000 - 6 + 1_800 + 300
        assert december["closing"] == 47_294

        statement = (await _get(exchange, "sme", f"/v1/orders/{order_id}/statement")).json()
        # The cost: 60.06 less the 15.00 refunded, 45.06; the government's 18.00 less 4.50,
        # the platform's 3.00, the firm the other 28.56.
        assert statement["split"] == {
            "cost": 4_506, "government": 1_350, "platform": 300, "firm": 2_856,
            "shares_bps": {"government": 2_996, "platform": 666, "firm": 6_338},
        }  # fmt: skip

        invoice = await _get(exchange, "sme", f"/v1/orders/{order_id}/invoice", format="pdf")
        text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(invoice.content)).pages)
        # What the firm bought and was refunded, the fee, and the platform's discount on the
        # compute: 60.06 - 15.00 - 3.00 = 42.06 incl. 6% VAT; the voucher is a payment, net
        # of its clawback (13.50), and the penalty is compensation: both in the remarks.
        for figure in (NAME, USCC, order_id, "算力服务 (平台折扣)", "-2.83", "-0.17", "42.06",
                       "13.50", "1.50"):  # fmt: skip
            assert figure in text, (figure, text)
        other = await (await exchange.as_("gz-dc", "provider")).get(
            "/v1/statements", params={"month": "2027-11", "account_id": "sme"}
        )
        assert other.status_code == 403, other.text
