"""An invoice names the buyer as registered when it bought, on the embedded default and on Kafka
and PostgreSQL: the enterprise that registers again under another name and code, and the code
another account takes afterwards, change no invoice already issued, through the API, after
`cx projections rebuild`, after a restart, and in `cx report invoice`."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cx.settings import Settings
from tests.e2e.harness import RunningExchange, running_exchange, settle

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GZ0 = "H100-80G.GZ.20271201T00"
ADMIN = "city-admin"
SUBSIDISED = {"name": "杭州算力科技有限公司", "uscc": "91330100716105852F"}
"""The enterprise the voucher was approved for, b1's when it bought."""
SHELL = {"name": "杭州新壳公司", "uscc": "91330100MA2AAAAAAA"}
"""What b1 registers as after the purchase: another legal entity."""


async def _post(exchange: RunningExchange, account: str, role: str, path: str, body: Any) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _register(exchange: RunningExchange, account: str, identity: dict[str, str]) -> None:
    body = {**identity, "kind": "sme", "city": "hangzhou"}
    await _post(exchange, account, "buyer", f"/v1/accounts/{account}/enterprise", body)


async def _buy(exchange: RunningExchange, quantity: int, voucher: str | None) -> str:
    order = {"symbol": GZ0, "side": "buy", "price": 1_500, "quantity": quantity}
    if voucher is not None:
        order["voucher"] = voucher
    placed = await _post(exchange, "b1", "buyer", "/v1/orders", order)
    assert placed["status"] == "accepted", placed
    await settle(exchange.runtime)
    return str(placed["order_id"])


async def _buyer(exchange: RunningExchange, order_id: str, card_hours: int) -> dict[str, Any]:
    """The invoice's buyer, the invoice checked to be the purchase's (card-hours at 15.00 元)."""
    b1 = await exchange.as_("b1")
    answer = await b1.get(f"/v1/orders/{order_id}/invoice.json")
    assert answer.status_code == 200, answer.text
    invoice = answer.json()
    assert [(i["quantity"], i["unit_price"]) for i in invoice["items"][:1]] == [(card_hours, 1_500)]
    return dict(invoice["buyer"])


def _cx(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CX_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("DATABASE_URL", None)
    env["CX_DATA_DIR"] = str(settings.data_dir)
    env["CX_MARKET_PARTITIONS"] = str(settings.market_partitions)
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return subprocess.run(
        [sys.executable, "-m", "cx.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _csv_buyer(settings: Settings, order_id: str) -> tuple[str, str]:
    made = _cx(settings, "report", "invoice", order_id, "--format", "csv")
    assert made.returncode == 0, made.stderr
    rows = list(csv.reader(io.StringIO(made.stdout)))
    assert rows[0][3:5] == ["buyer", "buyer_uscc"]
    return rows[1][3], rows[1][4]


async def test_an_invoice_keeps_the_registration_in_force_when_the_buyer_bought(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings
    subsidised = {"account_id": "b1", **SUBSIDISED}
    shell = {"account_id": "b1", **SHELL}
    async with running_exchange(settings) as exchange:
        programme = {
            "programme_id": "gz-26", "issuer": "Hangzhou", "budget": 100_000, "rate_bps": 3_000,
            "cap_per_contract": 10_000, "cap_per_enterprise": 100_000, "regions": ["GZ"],
            "cities": ["hangzhou"], "valid_from": 0, "valid_until": 4_102_444_800_000,
        }  # fmt: skip
        await _post(exchange, ADMIN, "programme_admin", "/v1/programmes", programme)
        await _register(exchange, "b1", SUBSIDISED)
        application = {"application_id": "b1-26", "amount": 50_000, "intended_use": "推理"}
        await _post(exchange, "b1", "buyer", "/v1/programmes/gz-26/applications", application)
        approval = {"application_id": "b1-26", "limit": 50_000}
        await _post(exchange, ADMIN, "programme_admin", "/v1/programmes/gz-26/grants", approval)
        await _post(exchange, "b1", "buyer", "/v1/accounts/b1/deposits",
                    {"kind": "cash", "amount": 100_000})  # fmt: skip
        await _post(exchange, "dc", "provider", "/v1/accounts/dc/deposits",
                    {"kind": "capacity", "symbol": GZ0, "quantity": 10})  # fmt: skip
        ask = {"symbol": GZ0, "side": "sell", "price": 1_500, "quantity": 10}
        await _post(exchange, "dc", "provider", "/v1/orders", ask)
        subsidised_order = await _buy(exchange, 3, "gz-26")
        assert await _buyer(exchange, subsidised_order, 3) == subsidised

        # b1 becomes another legal entity; the old code goes to b2.
        await _register(exchange, "b1", SHELL)
        await _register(exchange, "b2", SUBSIDISED)
        later_order = await _buy(exchange, 1, None)
        current = await (await exchange.as_("b1")).get("/v1/accounts/b1/enterprise")
        assert {k: current.json()[k] for k in SHELL} == SHELL
        assert await _buyer(exchange, subsidised_order, 3) == subsidised
        # A purchase after the new registration is invoiced to the new entity.
        assert await _buyer(exchange, later_order, 1) == shell

    assert _csv_buyer(settings, subsidised_order) == (SUBSIDISED["name"], SUBSIDISED["uscc"])
    rebuilt = _cx(settings, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _csv_buyer(settings, subsidised_order) == (SUBSIDISED["name"], SUBSIDISED["uscc"])
    assert _csv_buyer(settings, later_order) == (SHELL["name"], SHELL["uscc"])
    async with running_exchange(settings) as restarted:
        assert await _buyer(restarted, subsidised_order, 3) == subsidised
        assert await _buyer(restarted, later_order, 1) == shell
