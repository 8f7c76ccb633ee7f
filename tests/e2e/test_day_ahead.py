"""The day-ahead auction end to end, embedded and on Kafka + PostgreSQL: orders and a need
placed before the gate, the auction solved when every matching partition's bids are in, its
trades settled like any other, the day's books opened for continuous trading, and
`cx audit auction DATE` finding the stored auction sound.

Kafka stamps records with the broker's clock, so the gate is set a few seconds ahead of now.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cx.settings import Settings
from exchange.domain.catalogue import CHINA_STANDARD_TIME
from exchange.domain.messages import (
    PlaceBlockOrder,
    PlaceExclusiveGroup,
    PlaceOrder,
    exchange_order_id,
)
from settlement.audit import audit, audit_ledger
from settlement.service import day_ahead_stream
from tests.e2e.harness import RunningExchange, eventually, running_exchange, settle

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GATE_AHEAD_S = 15
"""How far ahead of now the gate is: time to start the exchange and place everything."""


def _gate_and_day() -> tuple[datetime, str]:
    """A gate some seconds from now (CST) and the delivery day it auctions: tomorrow."""
    now = datetime.now(CHINA_STANDARD_TIME)
    if now.hour == 23 and now.minute == 59 and now.second > 60 - 3 * GATE_AHEAD_S:
        time.sleep(61 - now.second)  # a gate must fall on the same CST day as now
        now = datetime.now(CHINA_STANDARD_TIME)
    gate = now + timedelta(seconds=GATE_AHEAD_S)
    return gate, (gate + timedelta(days=1)).strftime("%Y%m%d")


def _symbol(region: str, day: str, hour: int) -> str:
    return f"H100-80G.{region}.{day}T{hour:02d}"


async def _deposit(exchange: RunningExchange, account: str, body: dict[str, Any]) -> None:
    role = "provider" if body["kind"] == "capacity" else "buyer"
    client = await exchange.as_(account, role)
    response = await client.post(f"/v1/accounts/{account}/deposits", json=body)
    assert response.status_code in (200, 201), response.text


async def _stored(exchange: RunningExchange, stream: str) -> list[Any]:
    return await exchange.runtime.store.read_stream(stream)


async def _events_of(exchange: RunningExchange, contract: str, kind: str) -> list[dict[str, Any]]:
    """The stored events of a kind in a contract's (or a family's) stream."""
    return [e.data for e in await _stored(exchange, f"contract-{contract}") if e.type == kind]


async def test_a_day_ahead_auction_clears_a_need_and_hourly_orders_and_settles(
    exchange_settings: Settings,
) -> None:
    gate, day = _gate_and_day()
    settings = exchange_settings.model_copy(
        update={
            "day_ahead_gate": gate.strftime("%H:%M:%S"),
            "listings": "H100-80G.GZ,H100-80G.NX",
            "listing_days": 1,
            "tick_seconds": 1.0,
            "fees": "H100-80G:100:200",
        }
    )
    gz10, gz11 = _symbol("GZ", day, 10), _symbol("GZ", day, 11)
    nx10, nx11 = _symbol("NX", day, 10), _symbol("NX", day, 11)
    async with running_exchange(settings) as exchange:
        runtime = exchange.runtime

        async def listed() -> bool:
            for symbol in (gz10, gz11, nx10, nx11):
                response = await exchange.client.get(f"/v1/contracts/{symbol}")
                if response.status_code != 200:
                    return False
            return True

        await eventually(listed, "tomorrow's hours listed")
        for symbol in (gz10, gz11):
            await _deposit(exchange, "p", {"kind": "capacity", "symbol": symbol, "quantity": 4})
        for symbol in (nx10, nx11):
            await _deposit(exchange, "q", {"kind": "capacity", "symbol": symbol, "quantity": 2})
        await _deposit(exchange, "b1", {"kind": "cash", "amount": 100_000})
        await _deposit(exchange, "b2", {"kind": "cash", "amount": 100_000})
        await settle(runtime)
        # Guizhou sells at 15.00 each hour; Ningxia at 12.00 as a block over both.
        for n, symbol in enumerate((gz10, gz11)):
            await runtime.submit(
                PlaceOrder(
                    order_id=f"s{n}",
                    account_id="p",
                    symbol=symbol,
                    side="sell",
                    price=1_500,
                    quantity=4,
                    day_ahead=True,
                )
            )
        await runtime.submit(
            PlaceBlockOrder(
                order_id="sb",
                account_id="q",
                symbols=[nx10, nx11],
                side="sell",
                price=1_200,
                quantity=2,
                day_ahead=True,
            )
        )
        # b1 bids 20.00 for one unit of Guizhou at 10:00.
        await runtime.submit(
            PlaceOrder(
                order_id="h",
                account_id="b1",
                symbol=gz10,
                side="buy",
                price=2_000,
                quantity=1,
                day_ahead=True,
            )
        )
        # b2's need: two units for two hours, in Guizhou or Ningxia, at most 18.00.
        await runtime.submit(PlaceExclusiveGroup(order_id="need", account_id="b2",
                                                 alternatives=[[gz10, gz11], [nx10, nx11]],
                                                 price=1_800, quantity=2))  # fmt: skip
        await settle(runtime)
        assert datetime.now(CHINA_STANDARD_TIME) < gate, "placing took longer than the gate allows"
        held = await (await exchange.as_("b2")).get("/v1/accounts/b2")
        # Both alternatives hold their cash until the auction: 2 x (18.00 x 4 + 2% fee).
        assert held.json()["cash"]["held"] == 2 * (1_800 * 4 + 1_800 * 4 * 2 // 100)

        date = f"{day[:4]}-{day[4:6]}-{day[6:]}"

        async def cleared() -> list[Any]:
            stored = await _stored(exchange, day_ahead_stream(date))
            return [e for e in stored if e.type == "DayAheadAuctionCompleted"]

        (completed,) = await eventually(cleared, "the day-ahead auction", timeout_s=60)
        await settle(runtime)
        summary = completed.data
        assert (summary["status"], summary["gap_ppm"]) == ("optimal", 0)
        # Ningxia adds more welfare: (18 - 12) x 4 = 24.00 against (18 - 15) x 4.
        chosen, other = exchange_order_id("b2", "need.2"), exchange_order_id("b2", "need.1")
        trades = [
            e.data
            for s in (gz10, gz11, nx10, nx11)
            for e in await _stored(exchange, f"contract-{s}")
            if e.type == "TradeExecuted"
        ]
        assert {(t["symbol"], t["buy_order_id"], t["quantity"]) for t in trades} == {
            (nx10, chosen, 2),
            (nx11, chosen, 2),
            (gz10, exchange_order_id("b1", "h"), 1),
        }
        assert all(t["aggressor"] is None for t in trades)
        for trade in trades:
            assert trade["price"] == summary["prices"][trade["symbol"]]
        # Nobody pays above its limit or sells below it.
        assert 1_500 <= summary["prices"][gz10] <= 2_000
        assert summary["prices"][nx10] + summary["prices"][nx11] <= 2 * 1_800
        assert summary["prices"][nx10] + summary["prices"][nx11] >= 2 * 1_200
        cancelled = await _events_of(exchange, "H100-80G.GZ", "OrderCancelled")
        assert [(c["order_id"], c["reason"]) for c in cancelled] == [(other, "block_not_accepted")]
        account = (await (await exchange.as_("b2")).get("/v1/accounts/b2")).json()
        assert account["cash"]["held"] == 0
        # Each auction trade pays the 1% maker fee.
        amounts = [2 * summary["prices"][nx10], 2 * summary["prices"][nx11]]
        fees = sum(amount // 100 for amount in amounts)
        assert account["cash"]["available"] == 100_000 - sum(amounts) - fees
        # The day's books trade continuously now; a day-ahead order for them is refused.
        book = (await exchange.client.get(f"/v1/contracts/{gz11}")).json()
        assert book["state"] == "continuous"
        await runtime.submit(PlaceOrder(order_id="late", account_id="b1", symbol=gz11, side="buy",
                                        price=2_000, quantity=1, day_ahead=True))  # fmt: skip
        await settle(runtime)
        rejected = await _events_of(exchange, gz11, "OrderRejected")
        assert [(r["reason"], r["message"][:35]) for r in rejected] == [
            ("already_auctioned", f"the day-ahead auction of {date}")
        ]
        store, catalogue = runtime.store, runtime.catalogue
        assert (await audit(store, catalogue, runtime.topics.market_partitions)).discrepancies == []
        assert (
            await audit_ledger(store, catalogue, runtime.topics.market_partitions)
        ).discrepancies == []
    _cx_audit_auction(settings, date)


def _cx_audit_auction(settings: Settings, date: str) -> None:
    """`cx audit auction DATE`, as an operator runs it."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    # The exchange's market rules: under others the audit says they differ and stops.
    env.update(CX_DATA_DIR=str(settings.data_dir), CX_FEES=settings.fees,
               CX_DAY_AHEAD_GATE=settings.day_ahead_gate, CX_LISTINGS=settings.listings,
               CX_LISTING_DAYS=str(settings.listing_days),
               CX_MARKET_PARTITIONS=str(settings.market_partitions))  # fmt: skip
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    done = subprocess.run(
        [sys.executable, "-m", "cx.cli", "audit", "auction", date, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["discrepancies"] == []
    assert report["orders"] == 6
    assert report["welfare"] == report["resolved_welfare"] > 0
