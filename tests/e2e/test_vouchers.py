"""Two voucher programmes through the API, on the embedded default and on Kafka and PostgreSQL.

A large eastern programme whose per-contract cap binds, and a small one whose budget runs out
in the middle of the test: every invoice, the programme reports (JSON, CSV, PNG) and
`cx report programme` are checked to the fen, and `cx audit ledger` finds the journal whole and
then reports a corrupted projection.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from cx.settings import Settings
from settlement import projections as tables
from tests.e2e.grants import apply, register, uscc_of
from tests.e2e.grants import granted as approved_grant
from tests.e2e.harness import RunningExchange, running_exchange, settle

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GZ0 = "H100-80G.GZ.20271201T00"
YRD0 = "H100-80G.YRD.20271201T00"
YEAR_2027 = (1_798_761_600_000, 1_830_297_600_000)


async def _post(exchange: RunningExchange, account: str, role: str, path: str, body: Any) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def _programme(programme_id: str, budget: int, region: str, city: str) -> dict[str, Any]:
    return {
        "programme_id": programme_id,
        "issuer": city.title(),
        "budget": budget,
        "rate_bps": 3_000,
        "cap_per_contract": 1_000,
        "cap_per_enterprise": budget,
        "regions": [region],
        "cities": [city],
        "valid_from": YEAR_2027[0] - 400 * 86_400_000,
        "valid_until": YEAR_2027[1],
    }


async def _buy(exchange: RunningExchange, account: str, symbol: str, programme: str) -> None:
    order = {"symbol": symbol, "side": "buy", "price": 2_000, "quantity": 1, "voucher": programme}
    if symbol == YRD0:
        order["quantity"] = 3
    answer = await _post(exchange, account, "buyer", "/v1/orders", order)
    assert answer["status"] == "accepted", answer


async def test_two_programmes_one_running_out_and_every_invoice_to_the_fen(
    exchange_settings: Settings,
) -> None:
    # A 0.1% taker fee on H100-80G; makers trade free.
    settings = exchange_settings.model_copy(update={"fees": "H100-80G:0:10"})
    async with running_exchange(settings) as exchange:
        admin = "city-admin"
        await _post(
            exchange, admin, "programme_admin", "/v1/programmes",
            _programme("hangzhou", 1_000_000, "YRD", "hangzhou"),
        )  # fmt: skip
        await _post(
            exchange, admin, "programme_admin", "/v1/programmes",
            _programme("ningbo", 500, "GZ", "ningbo"),
        )  # fmt: skip
        await approved_grant(exchange, admin, "hangzhou", "sme", 100_000)
        await approved_grant(exchange, admin, "ningbo", "opc", 500, kind="opc", city="ningbo")
        await register(exchange, "opc-2", "opc", "ningbo")
        assert (await apply(exchange, "opc-2", "ningbo", 1, "late")).status_code == 201
        over = await (await exchange.as_(admin, "programme_admin")).post(
            "/v1/programmes/ningbo/grants", json={"application_id": "late", "limit": 1}
        )
        assert over.status_code == 422
        assert over.json()["type"] == "/problems/budget_exhausted"

        for account, role, body in (
            ("sme", "buyer", {"kind": "cash", "amount": 100_000}),
            ("opc", "buyer", {"kind": "cash", "amount": 10_000}),
            ("dc", "provider", {"kind": "capacity", "symbol": GZ0, "quantity": 10}),
            ("dc", "provider", {"kind": "capacity", "symbol": YRD0, "quantity": 10}),
        ):
            await _post(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
        # The platform waives the one-person company's first two fen of fees.
        relief = {
            "concession_id": "opc-relief", "account_ids": ["opc"], "discount_bps": 10_000,
            "budget_per_account": 2, "valid_from": 0, "valid_until": YEAR_2027[1],
            "reason": "fee relief for one-person companies",
        }  # fmt: skip
        granted = await _post(exchange, "ops", "operator", "/v1/admin/concessions", relief)
        assert [a["status"] for a in granted] == ["done"]
        for symbol, price in ((GZ0, 1_500), (YRD0, 2_000)):
            ask = {"symbol": symbol, "side": "sell", "price": price, "quantity": 10}
            await _post(exchange, "dc", "provider", "/v1/orders", ask)

        await _buy(exchange, "sme", YRD0, "hangzhou")
        for _ in range(3):
            await _buy(exchange, "opc", GZ0, "ningbo")
        await settle(exchange.runtime)

        sme = await (await exchange.as_("sme")).get("/v1/accounts/sme/invoices")
        lines = [
            [(c["symbol"], c["gross"], c["voucher"], c["fee"], c["paid"]) for c in i["contracts"]]
            for i in sme.json()["invoices"]
        ]
        # 30% of 6,000 is 1,800: the cap of 1,000 per contract binds.
        assert lines == [[(YRD0, 6_000, 1_000, 6, 5_006)]]
        opc = (await (await exchange.as_("opc")).get("/v1/accounts/opc/invoices")).json()
        lines = [
            [
                (c["gross"], c["voucher"], c["fee"], c["concession"], c["paid"])
                for c in i["contracts"]
            ]
            for i in opc["invoices"]
        ]
        # 450 of the 500 budget, then the last 50, then nothing: the budget ran out. The
        # platform's concession waives the fee twice, then its budget of 2 fen is spent.
        assert lines == [
            [(1_500, 450, 1, 1, 1_050)],
            [(1_500, 50, 1, 1, 1_450)],
            [(1_500, 0, 1, 0, 1_501)],
        ]
        assert opc["total"] == {
            "quantity": {"卡时": 3}, "gross": 4_500, "voucher": 500, "fee": 3, "concession": 2,
            "paid": 4_001,
        }  # fmt: skip
        account = (await (await exchange.as_("opc")).get("/v1/accounts/opc")).json()
        assert account["cash"] == {"available": 10_000 - 4_001, "held": 0}

        reader = await exchange.as_(admin, "programme_admin")
        ningbo = (await reader.get("/v1/programmes/ningbo/report")).json()
        figures = ("budget", "granted", "reserved", "committed", "remaining")
        assert {k: ningbo[k] for k in figures} == {
            "budget": 500, "granted": 500, "reserved": 0, "committed": 500, "remaining": 0,
        }  # fmt: skip
        assert ningbo["by_enterprise"] == [
            {
                "name": "opc 科技有限公司",
                "uscc": uscc_of("opc"),
                "account_id": "opc",
                "purchases": 2,
                "units": {"card-hour": 2},
                "gross": 3_000,
                "voucher": 500,
            }
        ]
        hangzhou = (await reader.get("/v1/programmes/hangzhou/report")).json()
        assert (hangzhou["committed"], hangzhou["remaining"]) == (1_000, 999_000)
        table = (await reader.get("/v1/programmes/ningbo/report", params={"format": "csv"})).text
        assert list(csv.reader(io.StringIO(table)))[1] == [
            "ningbo",
            "500",
            "500",
            "0",
            "500",
            "0",
            "0",
        ]
        chart = await reader.get("/v1/programmes/hangzhou/report", params={"format": "png"})
        assert chart.headers["content-type"] == "image/png"
        assert chart.content.startswith(b"\x89PNG")
        forbidden = await (await exchange.as_("sme")).get("/v1/programmes/ningbo/report")
        assert forbidden.status_code == 403

    out = settings.data_dir / "reports"
    made = _cx(settings, "report", "programme", "ningbo", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[1] == "ningbo,500,500,0,500,0,0"
    assert (out / "ningbo.png").read_bytes().startswith(b"\x89PNG")

    clean = _cx(settings, "audit", "ledger")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    await _corrupt_cash(settings, "opc", 10_000 - 4_001 + 1)
    corrupted = _cx(settings, "audit", "ledger")
    assert corrupted.returncode == 1
    assert (
        "差异 discrepancy 投影表不符 [projection] cash:opc: the projection shows 60.00 元, the "
        "journal's entries give 59.99 元" in corrupted.stdout
    )
    assert " fen" not in corrupted.stdout


async def _corrupt_cash(settings: Settings, account: str, available: int) -> None:
    from settlement.sql_store import open_event_store

    store = open_event_store(settings.event_store_url())
    try:
        async with store.engine.begin() as connection:
            await connection.execute(
                update(tables.cash_balances)
                .where(tables.cash_balances.c.account_id == account)
                .values(available=available)
            )
    finally:
        await store.close()


def _cx(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env["CX_DATA_DIR"] = str(settings.data_dir)
    # Replay applies the exchange's rules: the same fee schedule the market traded under.
    env["CX_FEES"] = settings.fees
    # The replica runs a matching stage per partition: the market's partition count.
    env["CX_MARKET_PARTITIONS"] = str(settings.market_partitions)
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return subprocess.run(
        [sys.executable, "-m", "cx.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
