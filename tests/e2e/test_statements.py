"""Statements, invoices and the programme's report for the city, through the API of an exchange
on a test clock, embedded and on Kafka and PostgreSQL.

One December (China Standard Time; trading runs until the delivery hour): an enterprise holding
a voucher grant and a fee concession buys 4 card-hours, the provider delivers 3, so the fourth
is refunded with the bond's penalty and its voucher part clawed back. The month's statement,
the order's statement, the VAT invoice (JSON, CSV, PDF), the programme's PDF report and the
CLI are checked to the fen, the statement against the journal's own legs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pypdfium2
import pytest
from cx_client import ExchangeClient
from pypdf import PdfReader
from sqlalchemy import and_, select

from cx.settings import Settings
from exchange.domain.catalogue import CHINA_STANDARD_TIME, to_utc_ms
from exchange.domain.messages import ControlMarket
from settlement import projections as tables
from settlement.documents import LINE_COLOUR
from tests.e2e.harness import LogClock, RunningExchange, running_exchange, settle

pytestmark = pytest.mark.e2e

GZ1 = "H100-80G.GZ.20271201T01"
HOUR = 3_600_000
MIDNIGHT = to_utc_ms(datetime(2027, 12, 1, tzinfo=CHINA_STANDARD_TIME))
DECEMBER = (MIDNIGHT, to_utc_ms(datetime(2028, 1, 1, tzinfo=CHINA_STANDARD_TIME)))
USCC = "91330106MA2B3C4D5D"
ROOT = Path(__file__).resolve().parents[2]


async def _post(exchange: RunningExchange, account: str, role: str, path: str, body: Any) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _tick(exchange: RunningExchange, clock: LogClock, at: int) -> None:
    clock.now_ms = at
    await exchange.runtime.submit(ControlMarket(operator_id="clock", action="tick", symbol=GZ1))
    await settle(exchange.runtime)


async def _december(exchange: RunningExchange, clock: LogClock) -> str:
    """The month's trading and delivery; the enterprise's buy order id."""
    admin = "city-admin"
    programme = {
        "programme_id": "gz-compute", "issuer": "Guiyang", "budget": 100_000,
        "rate_bps": 3_000, "cap_per_contract": 10_000, "cap_per_enterprise": 100_000,
        "regions": ["GZ"], "cities": ["guiyang"], "valid_from": MIDNIGHT - HOUR,
        "valid_until": DECEMBER[1],
    }  # fmt: skip
    await _post(exchange, admin, "programme_admin", "/v1/programmes", programme)
    enterprise = {
        "name": "贵阳小微算力科技有限公司",
        "uscc": USCC,
        "kind": "sme",
        "city": "guiyang",
    }
    await _post(exchange, "sme", "buyer", "/v1/accounts/sme/enterprise", enterprise)
    application = {"application_id": "sme-2027", "amount": 50_000, "intended_use": "模型微调"}
    await _post(exchange, "sme", "buyer", "/v1/programmes/gz-compute/applications", application)
    approval = {"application_id": "sme-2027", "limit": 50_000}
    await _post(exchange, admin, "programme_admin", "/v1/programmes/gz-compute/grants", approval)
    relief = {
        "concession_id": "sme-relief", "account_ids": ["sme"], "discount_bps": 10_000,
        "budget_per_account": 5, "valid_from": 0, "valid_until": DECEMBER[1],
        "reason": "fee relief",
    }  # fmt: skip
    await _post(exchange, "ops", "operator", "/v1/admin/concessions", relief)
    for account, role, body in (
        ("sme", "buyer", {"kind": "cash", "amount": 20_000}),
        ("trader", "buyer", {"kind": "cash", "amount": 20_000}),
        ("gz-dc", "provider", {"kind": "cash", "amount": 10_000}),
        ("gz-dc", "provider", {"kind": "capacity", "symbol": GZ1, "quantity": 10}),
        ("gz-idc", "provider", {"kind": "cash", "amount": 10_000}),
        ("gz-idc", "provider", {"kind": "capacity", "symbol": GZ1, "quantity": 10}),
    ):
        await _post(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
    ask = {"symbol": GZ1, "side": "sell", "price": 1_500, "quantity": 4}
    await _post(exchange, "gz-dc", "provider", "/v1/orders", ask)
    bid = {"symbol": GZ1, "side": "buy", "price": 1_500, "quantity": 4, "voucher": "gz-compute"}
    order = await _post(exchange, "sme", "buyer", "/v1/orders", bid)
    await settle(exchange.runtime)
    # Another buyer, without a voucher, pays more for the same contract. (Delivery allocates
    # providers' units to holders in account order and splits each provider's escrow by
    # units: gz-dc's 4 go to sme, gz-idc's 2 to trader.)
    ask = {"symbol": GZ1, "side": "sell", "price": 1_800, "quantity": 2}
    await _post(exchange, "gz-idc", "provider", "/v1/orders", ask)
    bid = {"symbol": GZ1, "side": "buy", "price": 1_800, "quantity": 2}
    await _post(exchange, "trader", "buyer", "/v1/orders", bid)
    await settle(exchange.runtime)

    await _tick(exchange, clock, MIDNIGHT + HOUR)
    await _tick(exchange, clock, MIDNIGHT + 2 * HOUR)
    for provider, buyer, delivered in (("gz-dc", "sme", 3), ("gz-idc", "trader", 2)):
        body = {"symbol": GZ1, "buyer_id": buyer, "delivered": delivered}
        await _post(exchange, provider, "provider", "/v1/deliveries/metering", body)
    await _tick(exchange, clock, MIDNIGHT + 3 * HOUR + 1)
    return str(order["order_id"])


async def _journal_movement(exchange: RunningExchange, account: str) -> int:
    """The sum of the account's cash, held and bond legs in December, read from the journal."""
    journal = tables.journal
    async with exchange.runtime.store.engine.connect() as connection:
        amounts = await connection.execute(
            select(journal.c.amount).where(
                and_(
                    journal.c.account.in_((f"cash:{account}", f"held:{account}",
                                           f"bond:{account}")),
                    journal.c.ts >= DECEMBER[0],
                    journal.c.ts < DECEMBER[1],
                )
            )
        )  # fmt: skip
        return sum(amounts.scalars())


async def test_a_month_with_a_voucher_a_concession_a_short_delivery_and_a_clawback(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings.model_copy(
        update={
            "fees": "H100-80G:0:10",
            "bond_bps": 1_000,
            "delivery_window_minutes": 60,
            # Trading until the delivery hour, so the whole month is December's.
            "gate_closure_minutes": 0,
        }
    )
    clock = LogClock(MIDNIGHT)
    async with running_exchange(settings, clock) as exchange:
        order_id = await _december(exchange, clock)
        sme = await exchange.as_("sme")

        statement = (await sme.get("/v1/statements", params={"month": "2027-12"})).json()
        lines = {name: amount for name, amount in statement["lines"].items() if amount}
        # 4 at 1,500 with a 0.1% taker fee of 6, 30% voucher 1,800; the concession waives 5 of
        # the fee (its budget); 1 card-hour undelivered: 1,500 refunded, the bond's 150
        # penalty, and its quarter of the voucher, 450, clawed back.
        assert lines == {
            "deposits": 20_000, "purchases": 6_000, "fees": 6, "vouchers": 1_800,
            "fee_concessions": 5, "refunds": 1_500, "penalties_received": 150,
            "voucher_clawbacks": 450,
        }  # fmt: skip
        assert statement["net_change"] == 20_000 - 6_000 - 6 + 1_800 + 5 + 1_500 + 150 - 450
        assert (statement["opening"], statement["closing"]) == (0, 16_999)
        assert statement["net_change"] == await _journal_movement(exchange, "sme")
        account = (await sme.get("/v1/accounts/sme")).json()
        assert account["cash"] == {"available": 16_999, "held": 0}
        # Compute cost 6,000 + 6 - 1,500 = 4,506: the government 1,800 - 450, the platform 5,
        # the firm the rest. Shares 2,996.005 / 11.096 / 6,992.898 bps round down to 9,999;
        # the last basis point goes to the largest remainder, the firm's.
        assert statement["split"] == {
            "cost": 4_506, "government": 1_350, "platform": 5, "firm": 3_151,
            "shares_bps": {"government": 2_996, "platform": 11, "firm": 6_993},
        }  # fmt: skip
        key = await exchange.key_for("sme")
        async with ExchangeClient(exchange.base_url, key) as client:
            typed = await client.statement("2027-12")
            assert (typed.closing, typed.split.firm) == (16_999, 3_151)
            assert (await client.order_statement(order_id)).net_change == -3_001
            assert (await client.order_invoice(order_id)).tax == 255
            document = await client.order_invoice_file(order_id, "pdf")
            assert "42.46" in _text(document)
            assert "169.99" in _text(await client.statement_pdf("2027-12"))
        filed = await sme.get("/v1/statements", params={"month": "2027-12", "format": "pdf"})
        assert filed.headers["content-type"] == "application/pdf"
        text = _text(filed.content)
        for figure in ("200.00", "60.00", "18.00", "4.50", "169.99", "45.06", "31.51", "6993"):
            assert figure in text, (figure, text)
        november = (await sme.get("/v1/statements", params={"month": "2027-11"})).json()
        assert (november["net_change"], november["entries"]) == (0, [])

        order = (await sme.get(f"/v1/orders/{order_id}/statement")).json()
        assert {name: amount for name, amount in order["lines"].items() if amount} == {
            "purchases": 6_000, "fees": 6, "vouchers": 1_800, "fee_concessions": 5,
            "refunds": 1_500, "penalties_received": 150, "voucher_clawbacks": 450,
        }  # fmt: skip
        assert order["net_change"] == -3_001
        assert order["split"] == statement["split"]

        invoice = (await sme.get(f"/v1/orders/{order_id}/invoice.json")).json()
        assert invoice["buyer"] == {"account_id": "sme", "name": "贵阳小微算力科技有限公司",
                                    "uscc": USCC}  # fmt: skip
        # Each line's total is tax-inclusive: amount = total / 1.06 rounded half away from zero.
        assert [
            (i["item"], i["unit"], i["quantity"], i["unit_price"], i["amount"], i["tax"],
             i["total"])
            for i in invoice["items"]
        ] == [
            ("信息技术服务*算力服务", "卡时", 4, 1_500, 5_660, 340, 6_000),
            ("信息技术服务*算力服务 (退款)", "卡时", -1, None, -1_415, -85, -1_500),
            ("信息技术服务*交易服务费", "项", 1, None, 6, 0, 6),
            ("信息技术服务*交易服务费 (平台减免)", "项", 1, None, -5, 0, -5),
        ]  # fmt: skip
        assert (invoice["amount"], invoice["tax"], invoice["total"]) == (4_246, 255, 4_501)
        assert invoice["total_in_words"] == "肆拾伍元零壹分"
        assert (invoice["voucher"], invoice["firm_paid"]) == (1_350, 3_151)
        table = (await sme.get(f"/v1/orders/{order_id}/invoice", params={"format": "csv"})).text
        rows = list(csv.reader(io.StringIO(table)))
        assert rows[1][4] == USCC
        assert rows[-1] == ["total", "", "", "", "", "4246", "600", "255", "4501"]
        pdf = await sme.get(f"/v1/orders/{order_id}/invoice", headers={"accept": "application/pdf"})
        assert pdf.headers["content-type"] == "application/pdf"
        text = _text(pdf.content)
        for figure in (
            "42.46",
            "2.55",
            "45.01",
            "56.60",
            "-14.15",
            "15.00",
            "13.50",
            "肆拾伍元零壹分",
            USCC,
            order_id,
        ):
            assert figure in text, (figure, text)
        assert "增值税" in text or "信息技术服务" in text, text
        _assert_chinese_embedded(pdf.content)

        other = await exchange.as_("trader")
        refused = await other.get("/v1/statements", params={"month": "2027-12",
                                                            "account_id": "sme"})  # fmt: skip
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "/problems/account-mismatch"
        for path in ("statement", "invoice.pdf"):
            theirs = await other.get(f"/v1/orders/{order_id}/{path}")
            missing = await other.get(f"/v1/orders/no-such-order/{path}")
            assert theirs.status_code == missing.status_code == 404
            assert theirs.json()["type"] == missing.json()["type"] == "/problems/unknown_order"
            assert theirs.json()["detail"].replace(order_id, "X") == missing.json()[
                "detail"
            ].replace("no-such-order", "X")
        # A sell has neither statement nor invoice, and says so in words, Chinese first.
        provider = await exchange.as_("gz-dc", "provider")
        sold = next(o["order_id"] for o in (await provider.get("/v1/orders")).json())
        for path in ("statement", "invoice.json"):
            sell = await provider.get(f"/v1/orders/{sold}/{path}")
            assert (sell.status_code, sell.json()["type"]) == (422, "/problems/not-a-buy-order")
            assert sell.json()["title"] == "不是买单 not a buy order"
            assert sell.json()["detail"] == (
                f"订单 {sold!r} 是卖单, 结算单和发票只开给买单 / order {sold!r} is a sell: "
                "statements and invoices are of buy orders"
            )
        # An operator naming an account that never settled anything: not a zero statement.
        operator = await exchange.as_("ops", "operator")
        typo = await operator.get("/v1/statements", params={"month": "2027-12",
                                                           "account_id": "smee"})  # fmt: skip
        assert (typo.status_code, typo.json()["type"]) == (404, "/problems/unknown-account")
        theirs = await operator.get("/v1/statements", params={"month": "2027-12",
                                                             "account_id": "sme"})  # fmt: skip
        assert theirs.json() == statement
        bad = await sme.get("/v1/statements", params={"month": "2027-13"})
        assert bad.status_code == 422
        # Years the calendar cannot hold (or whose following month it cannot) are refused too.
        for month in ("0000-01", "9999-12"):
            bad = await sme.get("/v1/statements", params={"month": month})
            assert (bad.status_code, bad.json()["type"]) == (422, "/problems/invalid-month")

        reader = await exchange.as_("city-admin", "programme_admin")
        report = (await reader.get("/v1/programmes/gz-compute/report")).json()
        city = report["city"]
        assert (report["committed"], report["clawed_back"], report["net_used"]) == (
            1_800, 450, 1_350,
        )  # fmt: skip
        assert city["by_month"] == [{"month": "2027-12", "used": 1_800, "clawed_back": 450}]
        # 4 card-hours for 18 元 of voucher: 0.222 card-hours per 元 (rounded down).
        assert city["compute_per_yuan"] == [
            {"unit": "card-hour", "units": 4, "voucher": 1_800, "units_per_yuan": "0.222"}
        ]
        assert (city["spread"]["top_10pct_bps"], city["spread"]["gini_bps"]) == (10_000, 0)
        # The holder paid 1,500 a unit, the other buyer 1,800: 6,000 against 7,200 is
        # 1,666.7 bps less, rounded down.
        assert city["prices"][0]["holder_avg"] == 1_500
        assert city["prices"][0]["other_avg"] == 1_800
        assert city["holder_premium_bps"] == -1_667
        document = await reader.get("/v1/programmes/gz-compute/report", params={"format": "pdf"})
        assert document.headers["content-type"] == "application/pdf"
        text = _text(document.content)
        for figure in ("1,000.00", "18.00", "4.50", "13.50", "0.222", "-1667", "2027-12"):
            assert figure in text, (figure, text)
        _assert_line_visible(document.content)

    made = _cx(settings, "report", "statement", "sme", "--month", "2027-12")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["split"]["firm"] == 3_151
    made = _cx(settings, "report", "invoice", order_id, "--format", "csv")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[-1] == "total,,,,,4246,600,255,4501"
    out = settings.data_dir / "reports"
    made = _cx(settings, "report", "programme", "gz-compute", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert "13.50" in _text((out / "gz-compute.pdf").read_bytes())


def _cx(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env["CX_DATA_DIR"] = str(settings.data_dir)
    env["CX_FEES"] = settings.fees
    env["CX_BOND_BPS"] = str(settings.bond_bps)
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return subprocess.run(
        [sys.executable, "-m", "cx.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def _assert_chinese_embedded(pdf: bytes) -> None:
    """The Chinese text carries its glyphs (a TrueType font file in the PDF), so every viewer
    shows it, and the rendered page has the text's ink in its title."""
    fonts = PdfReader(io.BytesIO(pdf)).pages[0]["/Resources"]["/Font"]
    embedded = []
    for ref in fonts.values():
        font = ref.get_object()
        for descendant in font.get("/DescendantFonts", [font]):
            descriptor = descendant.get_object().get("/FontDescriptor")
            if descriptor is not None and "/FontFile2" in descriptor.get_object():
                embedded.append(font["/BaseFont"])
    assert embedded, (
        f"no embedded font among {[f.get_object()['/BaseFont'] for f in fonts.values()]}"
    )
    image = pypdfium2.PdfDocument(pdf)[0].render(scale=1.5).to_pil().convert("L")
    width, height = image.size
    title = image.crop((0, 0, width, height // 8))
    assert sum(1 for value in title.get_flattened_data() if value < 128) > 300


def _assert_line_visible(pdf: bytes) -> None:
    """The first plot's line is drawn: its colour covers pixels over a real height of the
    page (a line squashed onto the axis, or drawn off the plot, would not)."""
    target = tuple(int(LINE_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    page = pypdfium2.PdfDocument(pdf)[0]
    image = page.render(scale=1.5).to_pil().convert("RGB")
    width, height = image.size
    pixels = image.load()
    assert pixels is not None
    rows = [
        y
        for y in range(height)
        for x in range(0, width, 2)
        if all(abs(pixels[x, y][i] - target[i]) < 40 for i in range(3))
    ]
    assert len(rows) > 200, len(rows)
    assert max(rows) - min(rows) > 60, (min(rows), max(rows))
