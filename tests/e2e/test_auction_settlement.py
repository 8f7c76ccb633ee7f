"""Trades of call auctions settle, through the API: an operator's halt and resume, the opening
auction of CX_PRE_OPEN and the reopening after a price-band halt.

A call auction's trades have no aggressor; settlement used to refuse them (`trades.aggressor`
was NOT NULL) and retried for ever, so orders stayed open and fills never arrived. Each test
checks the trades, fills, orders, balances and invoices, and that `cx audit` and
`cx audit ledger` find nothing amiss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cx.settings import Settings
from tests.e2e.harness import RunningExchange, eventually, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GZ0 = "H100-80G.GZ.20271201T00"
FEES = "H100-80G:100:200"
"""1% maker, 2% taker: an auction's trades pay 1% on both sides."""
START = 100_000
"""The buyer's deposit."""


async def _post(
    exchange: RunningExchange, account: str, path: str, body: dict[str, Any], role: str = "buyer"
) -> dict[str, Any]:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _order(exchange: RunningExchange, account: str, side: str, price: int, qty: int) -> str:
    role = "provider" if side == "sell" else "buyer"
    body = {"symbol": GZ0, "side": side, "price": price, "quantity": qty}
    placed = await _post(exchange, account, "/v1/orders", body, role)
    assert placed["status"] == "accepted", placed
    order_id: str = placed["order_id"]
    return order_id


async def _fund(exchange: RunningExchange) -> None:
    capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 4}
    await _post(exchange, "p", "/v1/accounts/p/deposits", capacity, "provider")
    await _post(exchange, "b", "/v1/accounts/b/deposits", {"kind": "cash", "amount": START})


async def _trade_for_a_reference_price(exchange: RunningExchange) -> None:
    """One continuous trade at 18.00 (the buyer takes: 2% fee), the auctions' reference."""
    await _order(exchange, "p", "sell", 1_800, 1)
    await _order(exchange, "b", "buy", 1_800, 1)
    await settle(exchange.runtime)


async def _rest_crossing_orders(exchange: RunningExchange) -> None:
    """The issue's book: asks 17.00 x1 and 17.50 x2, bids 19.00 x2 and 17.60 x1."""
    for price, quantity in ((1_700, 1), (1_750, 2)):
        await _order(exchange, "p", "sell", price, quantity)
    for price, quantity in ((1_900, 2), (1_760, 1)):
        await _order(exchange, "b", "buy", price, quantity)
    await settle(exchange.runtime)
    book = (await exchange.client.get(f"/v1/contracts/{GZ0}/book")).json()
    assert (book["bids"], book["asks"]) == ([[1_900, 2], [1_760, 1]], [[1_700, 1], [1_750, 2]])


async def _operator(exchange: RunningExchange, action: str, **body: Any) -> None:
    operator = await exchange.operator()
    answer = await operator.post(
        f"/v1/admin/contracts/{GZ0}/{action}", json={"reason": "auction drill", **body}
    )
    # Every control of a contract answers with matching's decision.
    assert answer.json()["status"] == "applied", answer.text


async def _auction_settled(
    exchange: RunningExchange, auction: list[tuple[int, int]], continuous: list[int]
) -> None:
    """The auction's trades (price, quantity), after the continuous ones at `continuous`
    prices (quantity 1 each, the buyer taking), settled everywhere a participant looks."""
    await settle(exchange.runtime)
    trades = (await exchange.client.get(f"/v1/contracts/{GZ0}/trades")).json()
    assert [(t["price"], t["quantity"], t["aggressor"]) for t in trades] == [
        *((price, quantity, None) for price, quantity in reversed(auction)),
        *((price, 1, "buy") for price in reversed(continuous)),
    ]
    buyer = await exchange.as_("b")
    fills = (await buyer.get("/v1/fills")).json()
    assert [f["liquidity"] for f in fills] == ["auction"] * len(auction) + ["taker"] * len(
        continuous
    )
    orders = (await buyer.get("/v1/orders")).json()
    orders += (await (await exchange.as_("p", "provider")).get("/v1/orders")).json()
    assert {o["status"] for o in orders} == {"filled"}
    book = (await exchange.client.get(f"/v1/contracts/{GZ0}/book")).json()
    assert (book["bids"], book["asks"]) == ([], [])

    auction_fees = [price * quantity // 100 for price, quantity in auction]
    continuous_fees = [price * 2 // 100 for price in continuous]
    gross = sum(p * q for p, q in auction) + sum(continuous)
    fees = sum(auction_fees) + sum(continuous_fees)
    account = (await buyer.get("/v1/accounts/b")).json()
    assert account["cash"] == {"available": START - gross - fees, "held": 0}
    units = sum(q for _, q in auction) + len(continuous)
    assert account["positions"] == [{"symbol": GZ0, "quantity": units}]
    invoices = (await buyer.get("/v1/accounts/b/invoices")).json()
    assert (invoices["total"]["gross"], invoices["total"]["fee"]) == (gross, fees)
    assert invoices["total"]["paid"] == gross + fees
    provider = await exchange.as_("p", "provider")
    (sold,) = (await provider.get("/v1/obligations")).json()
    assert (sold["quantity"], sold["payout"]) == (units, gross)
    audited = (await (await exchange.operator()).get("/v1/admin/audit")).json()
    assert audited["discrepancies"] == []


def _cx_audits_clean(settings: Settings) -> None:
    """`cx audit` and `cx audit ledger`, run as an operator would, with the market's rules."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env.update(
        CX_DATA_DIR=str(settings.data_dir),
        CX_FEES=settings.fees,
        CX_PRICE_BAND=str(settings.price_band),
        CX_HALT_SECONDS=str(settings.halt_seconds),
        CX_PRE_OPEN=str(settings.pre_open).lower(),
        # The replica runs a matching stage per partition: the market's partition count.
        CX_MARKET_PARTITIONS=str(settings.market_partitions),
    )
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    for scope in ("all", "ledger"):
        done = subprocess.run(
            [sys.executable, "-m", "cx.cli", "audit", scope, "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["discrepancies"] == []


async def test_an_operators_halt_and_resume_clears_an_auction_that_settles(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings.model_copy(update={"fees": FEES})
    async with running_exchange(settings) as exchange:
        await _fund(exchange)
        await _trade_for_a_reference_price(exchange)
        await _operator(exchange, "halt")
        await _rest_crossing_orders(exchange)
        await _operator(exchange, "resume")
        # Volume 3 at 17.50 or 17.60, with no imbalance: 17.60 is nearer the last price.
        await _auction_settled(exchange, [(1_760, 1)] * 3, continuous=[1_800])
    _cx_audits_clean(settings)


async def test_the_opening_auction_of_a_pre_open_market_settles(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CX_FEES=FEES, CX_PRE_OPEN=True, CX_TICK_SECONDS=0.2)
    async with running_exchange(settings) as exchange:
        await _fund(exchange)
        await _rest_crossing_orders(exchange)
        # Opened by its family's scheduled auction, which the ticker's next record runs.
        await _operator(exchange, "schedule_auction", at=exchange.market.now_ms + 500)
        # The pipeline is idle until the ticker reaches the auction's time: wait for the opening.
        await eventually(lambda: _opened(exchange), "the opening auction")
        # No reference price: of 17.50 and 17.60 (volume 3 each), the lower.
        await _auction_settled(exchange, [(1_750, 1)] * 3, continuous=[])
    _cx_audits_clean(settings)


async def test_the_reopening_after_a_price_band_halt_settles(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, CX_FEES=FEES, CX_PRICE_BAND=100, CX_HALT_SECONDS=1, CX_TICK_SECONDS=0.2
    )
    async with running_exchange(settings) as exchange:
        await _fund(exchange)
        await _trade_for_a_reference_price(exchange)
        # 19.50 is outside 18.00 +- 1.00: the buy halts the contract and rests.
        await _order(exchange, "p", "sell", 1_950, 1)
        await _order(exchange, "b", "buy", 1_950, 1)
        # A second later the ticker's record reopens it through an auction.
        await eventually(lambda: _reopened(exchange), "the reopening auction")
        await _auction_settled(exchange, [(1_950, 1)], continuous=[1_800])
    _cx_audits_clean(settings)


async def _states(exchange: RunningExchange) -> list[tuple[str, str]]:
    """The contract's settled state changes (state, reason), oldest first."""
    operator = await exchange.operator()
    stored = await operator.get(f"/v1/admin/streams/contract-{GZ0}", params={"limit": 1000})
    return [
        (e["data"]["state"], e["data"]["reason"])
        for e in stored.json()
        if e["type"] == "ContractStateChanged"
    ]


async def _reopened(exchange: RunningExchange) -> bool:
    return (await _states(exchange))[-2:] == [("halted", "price_band"), ("continuous", "reopened")]


async def _opened(exchange: RunningExchange) -> bool:
    return (await _states(exchange))[-1:] == [("continuous", "opened")]
