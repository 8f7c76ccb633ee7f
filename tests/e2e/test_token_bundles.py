"""A month's token bundle through the API of an exchange on a test clock, embedded and on Kafka
and PostgreSQL: bought with a voucher, drawn down by daily metering in tokens (each report
paying the provider at once), refused when metered beyond it or after its period, partly
refunded at the end with the voucher's share of the unused tokens returned to the grant; the
deliveries, both parties' statements and the audit of the whole history agree to the fen."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from cx_client import ExchangeClient, ProblemError
from pypdf import PdfReader

from cx.settings import Settings
from exchange.domain.catalogue import parse_symbol, to_utc_ms
from exchange.domain.messages import ControlMarket
from settlement.audit import audit_ledger
from tests.e2e.harness import LogClock, RunningExchange, running_exchange, settle
from tests.e2e.test_statements import ROOT, USCC

pytestmark = pytest.mark.e2e

BUNDLE = "TOK-QWEN.YRD.M202712"
START = to_utc_ms(parse_symbol(BUNDLE).delivery_start)
END = to_utc_ms(parse_symbol(BUNDLE).delivery_end)
HOUR = 3_600_000
DAY = 24 * HOUR


async def _post(exchange: RunningExchange, account: str, role: str, path: str, body: Any) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _voucher_grant(exchange: RunningExchange) -> None:
    """A city's programme for token purchases, and the SME's approved grant."""
    admin = "city-admin"
    programme = {
        "programme_id": "yrd-tokens", "issuer": "Hangzhou", "budget": 100_000,
        "rate_bps": 3_000, "cap_per_contract": 10_000, "cap_per_enterprise": 100_000,
        "classes": ["TOK-QWEN"], "regions": ["YRD"], "cities": ["hangzhou"],
        "valid_from": START - 30 * DAY, "valid_until": END + 30 * DAY,
    }  # fmt: skip
    await _post(exchange, admin, "programme_admin", "/v1/programmes", programme)
    enterprise = {
        "name": "杭州小微模型应用有限公司",
        "uscc": USCC,
        "kind": "sme",
        "city": "hangzhou",
    }
    await _post(exchange, "sme", "buyer", "/v1/accounts/sme/enterprise", enterprise)
    application = {"application_id": "sme-tokens", "amount": 50_000, "intended_use": "客服模型"}
    await _post(exchange, "sme", "buyer", "/v1/programmes/yrd-tokens/applications", application)
    approval = {"application_id": "sme-tokens", "limit": 50_000}
    await _post(exchange, admin, "programme_admin", "/v1/programmes/yrd-tokens/grants", approval)


async def _cx_meter(
    exchange: RunningExchange, key: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`cx meter ...` against the running exchange, in a process of its own."""
    command = [sys.executable, "-m", "cx.cli", "meter", "--url", exchange.base_url, *args]
    env = {**os.environ, "CX_API_KEY": key}
    return await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


async def _tick(exchange: RunningExchange, clock: LogClock, at: int) -> None:
    clock.now_ms = at
    await exchange.runtime.submit(ControlMarket(operator_id="clock", action="tick", symbol=BUNDLE))
    await settle(exchange.runtime)


async def test_a_month_s_bundle_drawn_down_through_the_api(exchange_settings: Settings) -> None:
    settings = exchange_settings.model_copy(
        update={
            "fees": "TOK-QWEN:0:20",
            "bond_bps": 1_000,
            "delivery_window_minutes": 60,
            "listings": "TOK-QWEN.YRD",
            "listing_days": 0,
            "term_days": 40,
        }
    )
    clock = LogClock(START - 10 * DAY)
    async with running_exchange(settings, clock) as exchange:
        await _voucher_grant(exchange)
        for account, role, body in (
            ("qwen-host", "provider", {"kind": "cash", "amount": 10_000}),
            ("qwen-host", "provider", {"kind": "capacity", "symbol": BUNDLE, "quantity": 50}),
            ("sme", "buyer", {"kind": "cash", "amount": 20_000}),
        ):
            await _post(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
        ask = {"symbol": BUNDLE, "side": "sell", "price": 900, "quantity": 50}
        await _post(exchange, "qwen-host", "provider", "/v1/orders", ask)
        bid = {
            "symbol": BUNDLE, "side": "buy", "price": 900, "quantity": 12, "voucher": "yrd-tokens"
        }  # fmt: skip
        await _post(exchange, "sme", "buyer", "/v1/orders", bid)
        await settle(exchange.runtime)

        provider = await exchange.as_("qwen-host", "provider")
        early = await provider.post(
            "/v1/deliveries/metering", json={"symbol": BUNDLE, "buyer_id": "sme", "tokens": 1}
        )
        assert early.status_code == 422, early.text
        assert early.json()["type"] == "/problems/bundle_not_started"

        await _tick(exchange, clock, START)
        in_units = await provider.post(
            "/v1/deliveries/metering", json={"symbol": BUNDLE, "buyer_id": "sme", "delivered": 1}
        )
        assert in_units.status_code == 422
        assert in_units.json()["type"] == "/problems/bundle-metering-in-tokens"

        key = await exchange.key_for("qwen-host", "provider")
        async with ExchangeClient(exchange.base_url, key) as client:
            # Ten daily reports of 333,333 tokens: 10,800 x used // 12,000,000 paid so far;
            # the first through the CLI.
            clock.now_ms = START + 20 * HOUR
            report = ("--tokens", "333333", "--id", "day-0")
            cli = await _cx_meter(exchange, key, BUNDLE, "sme", *report)
            assert cli.returncode == 0, cli.stderr
            assert json.loads(cli.stdout)["status"] == "done"
            in_units = await _cx_meter(exchange, key, BUNDLE, "sme", "--units", "1")
            assert in_units.returncode == 1
            assert "bundle-metering-in-tokens" in in_units.stderr
            for day in range(1, 10):
                clock.now_ms = START + day * DAY + 20 * HOUR
                answer = await client.report_bundle_use(
                    BUNDLE, "sme", 333_333, report_id=f"day-{day}"
                )
                assert answer.status == "done", answer
            with pytest.raises(ProblemError) as beyond:
                await client.report_bundle_use(BUNDLE, "sme", 9_000_000, report_id="too-much")
            assert beyond.value.code == "metering_exceeds_bundle"
            # A report sent again draws down once.
            again = await provider.post(
                "/v1/deliveries/metering",
                json={"symbol": BUNDLE, "buyer_id": "sme", "tokens": 333_333, "report_id": "x"},
            )
            assert again.status_code == 201
            clock.now_ms = END
            with pytest.raises(ProblemError) as late:
                await client.report_bundle_use(BUNDLE, "sme", 1, report_id="late")
            assert late.value.code == "bundle_period_over"
        await settle(exchange.runtime)
        used = 11 * 333_333
        paid = 10_800 * used // 12_000_000
        assert paid == 3_299

        deliveries = (await provider.get("/v1/deliveries")).json()
        mine = [d for d in deliveries if d["symbol"] == BUNDLE]
        assert [(d["status"], d["delivered"], d["quantity"]) for d in mine] == [
            ("drawing", used, 12)
        ]

        await _tick(exchange, clock, END + HOUR + 1)
        sme = await exchange.as_("sme")
        statement = (await sme.get("/v1/statements", params={"month": "2027-12"})).json()
        # 12 million tokens at 9 元: 108 元 escrowed (in November), 32.40 元 of it the
        # voucher's; 32.99 元 drawn down, 75.01 元 refunded in January's first hour (CST), and
        # the voucher's share of the 8,333,337 unused tokens, 3,240 x 8,333,337 // 12,000,000
        # = 22.50 元, returned to the grant out of it.
        returned = 3_240 * (12_000_000 - used) // 12_000_000
        assert returned == 2_250
        assert statement["bundles"] == [
            {
                "symbol": BUNDLE, "role": "holder", "from_ts": START, "until_ts": END,
                "counterparties": ["qwen-host"], "bought": 12, "amount": 10_800,
                "used_tokens": used, "paid": paid, "refunded": 10_800 - paid,
                "settled": True, "voucher": 3_240, "voucher_returned": returned,
            }
        ]  # fmt: skip
        async with ExchangeClient(exchange.base_url, await exchange.key_for("sme")) as client:
            typed = (await client.statement("2027-12")).bundles
            assert [(b.used_tokens, b.voucher_returned) for b in typed] == [(used, returned)]
            # The PDF shows the bundle in 百万 tokens and 元.
            text = "\n".join(
                page.extract_text()
                for page in PdfReader(io.BytesIO(await client.statement_pdf("2027-12"))).pages
            )
            for figure in ("TOK-QWEN.YRD.M202712", "3.666663", "32.99", "75.01", "22.50"):
                assert figure in text, (figure, text)
        january = (await sme.get("/v1/statements", params={"month": "2028-01"})).json()
        assert january["lines"]["refunds"] == 10_800 - paid
        assert january["lines"]["voucher_clawbacks"] == returned
        host = await exchange.as_("qwen-host")
        december = (await host.get("/v1/statements", params={"month": "2027-12"})).json()
        assert december["lines"]["sales"] == paid
        assert [b["role"] for b in december["bundles"]] == ["provider"]
        account = (await host.get("/v1/accounts/qwen-host")).json()
        # No maker fee here: the provider keeps all it was paid, and its bond (90 fen a unit
        # sold) is back.
        assert account["cash"] == {"available": 10_000 + paid, "held": 0}
        buyer = (await sme.get("/v1/accounts/sme")).json()
        taker_fee = 10_800 * 20 // 10_000
        assert buyer["cash"] == {
            "available": 20_000 - paid - taker_fee + 3_240 - returned,
            "held": 0,
        }

        audit = await (await exchange.operator()).get("/v1/admin/audit")
        assert audit.json()["discrepancies"] == [], audit.text
        store, catalogue = exchange.runtime.store, exchange.runtime.catalogue
        assert (
            await audit_ledger(store, catalogue, exchange.runtime.topics.market_partitions)
        ).discrepancies == []


async def test_a_bundle_s_invoice_refunds_its_unused_tokens(exchange_settings: Settings) -> None:
    """4 million tokens at 5 元 a million, 2,500,001 used: the provider is paid 2,000 x
    2,500,001 // 4,000,000 = 1,250 fen and 750 refunded, for 1,499,999 unused tokens (not 2
    whole millions, which would be 1,000 fen), in JSON, CSV and the PDF (in 百万tokens)."""
    settings = exchange_settings.model_copy(
        update={
            "fees": "TOK-QWEN:0:0",
            "bond_bps": 1_000,
            "delivery_window_minutes": 60,
            "listings": "TOK-QWEN.YRD",
            "listing_days": 0,
            "term_days": 40,
        }
    )
    clock = LogClock(START - 10 * DAY)
    async with running_exchange(settings, clock) as exchange:
        for account, role, body in (
            ("qwen-host", "provider", {"kind": "cash", "amount": 10_000}),
            ("qwen-host", "provider", {"kind": "capacity", "symbol": BUNDLE, "quantity": 4}),
            ("sme", "buyer", {"kind": "cash", "amount": 20_000}),
        ):
            await _post(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
        ask = {"symbol": BUNDLE, "side": "sell", "price": 500, "quantity": 4}
        await _post(exchange, "qwen-host", "provider", "/v1/orders", ask)
        bid = {"symbol": BUNDLE, "side": "buy", "price": 500, "quantity": 4}
        order = await _post(exchange, "sme", "buyer", "/v1/orders", bid)
        await settle(exchange.runtime)
        await _tick(exchange, clock, START)
        clock.now_ms = START + HOUR
        metering = {"symbol": BUNDLE, "buyer_id": "sme", "tokens": 2_500_001}
        await _post(exchange, "qwen-host", "provider", "/v1/deliveries/metering", metering)
        await _tick(exchange, clock, END + HOUR + 1)

        sme = await exchange.as_("sme")
        order_id = order["order_id"]
        invoice = (await sme.get(f"/v1/orders/{order_id}/invoice.json")).json()
        assert [
            (i["item"], i["unit"], i["quantity"], i["unit_price"], i["total"])
            for i in invoice["items"]
        ] == [
            ("信息技术服务*算力服务", "百万tokens", 4, 500, 2_000),
            ("信息技术服务*算力服务 (退款)", "tokens", -1_499_999, None, -750),
        ]
        assert invoice["total"] == 1_250
        # 1,499,999 tokens at 5 元 a million are 7.499995 元: 7.50 元 to the fen.
        refund = invoice["items"][1]
        assert (-refund["quantity"] * 500 + 500_000) // 1_000_000 == -refund["total"]
        table = (await sme.get(f"/v1/orders/{order_id}/invoice.csv")).text
        assert f"{BUNDLE},tokens,-1499999,,-708,600,-42,-750" in table, table
        statement = (await sme.get(f"/v1/orders/{order_id}/statement")).json()
        assert [
            (e["refunded_units"], e["refunded_unit"])
            for e in statement["entries"]
            if e["kind"] == "delivery"
        ] == [(1_499_999, "tokens")]
        pdf = (await sme.get(f"/v1/orders/{order_id}/invoice.pdf")).content
        text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
        assert "-1.499999" in text, text
