"""Audits of a live exchange: `cx audit`, `cx audit ledger` and `cx replay --verify` read one
consistent point of the history, so while the market trades they report nothing (from this
process and from another, as an operator's `cx` beside `cx serve`), and a real corruption still
shows."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest
from sqlalchemy import insert, update

from cx.settings import Settings
from settlement import projections as tables
from settlement.audit import AuditReport, audit, audit_ledger
from settlement.sql_store import open_event_store
from tests.e2e.harness import RunningExchange, running_exchange, settle
from tests.history.helpers import GZ0, cx, ok, order

pytestmark = pytest.mark.e2e

YRD0 = "H100-80G.YRD.20271201T00"
BUYERS = ("b1", "b2", "b3")
PROVIDERS = ("p1", "p2")


async def _fund(exchange: RunningExchange) -> None:
    for name in BUYERS:
        buyer = await exchange.as_(name)
        deposit = {"kind": "cash", "amount": 10**10}
        await ok(buyer.post(f"/v1/accounts/{name}/deposits", json=deposit))
    for name in PROVIDERS:
        provider = await exchange.as_(name, "provider")
        await ok(
            provider.post(f"/v1/accounts/{name}/deposits", json={"kind": "cash", "amount": 10**8})
        )
        for symbol in (GZ0, YRD0):
            capacity = {"kind": "capacity", "symbol": symbol, "quantity": 10**6}
            await ok(provider.post(f"/v1/accounts/{name}/deposits", json=capacity))
    idle = await exchange.as_("idle")
    await ok(idle.post("/v1/accounts/idle/deposits", json={"kind": "cash", "amount": 1_000}))


async def _trade(exchange: RunningExchange, stop: asyncio.Event) -> int:
    """Buy, sell, amend and cancel until `stop`; returns how many orders were placed."""
    rng = random.Random(14)
    clients: dict[str, httpx.AsyncClient] = {
        name: await exchange.as_(name) for name in (*BUYERS, *PROVIDERS)
    }
    resting: list[tuple[str, str]] = []
    placed = 0
    while not stop.is_set():
        side = rng.choice(["buy", "sell"])
        name = rng.choice(BUYERS if side == "buy" else PROVIDERS)
        symbol = rng.choice([GZ0, YRD0])
        body = order(side, 1800 + rng.randint(-4, 4) * 10, rng.randint(1, 5), symbol)
        answer = await clients[name].post("/v1/orders", json=body)
        assert answer.status_code == 201, answer.text
        placed += 1
        resting.append((name, answer.json()["order_id"]))
        if placed % 5 == 0:
            owner, order_id = resting.pop(rng.randrange(len(resting)))
            await clients[owner].delete(f"/v1/orders/{order_id}")
        elif placed % 7 == 0:
            owner, order_id = rng.choice(resting)
            await clients[owner].patch(f"/v1/orders/{order_id}", json={"quantity": 1})
    return placed


def _clean(report: AuditReport) -> None:
    assert report.discrepancies == [], "\n".join(map(str, report.discrepancies))


async def test_audits_of_a_trading_market_are_clean_and_still_find_a_corruption(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        await _fund(exchange)
        catalogue = exchange.runtime.catalogue
        # A second store, as `cx audit` in another process would open.
        store = open_event_store(exchange_settings.event_store_url())
        stop = asyncio.Event()
        trading = asyncio.create_task(_trade(exchange, stop))
        audited: list[int] = []
        try:
            for _ in range(5):
                whole = await audit(store, catalogue, exchange_settings.market_partitions)
                _clean(whole)
                ledger = await audit_ledger(store, catalogue, exchange_settings.market_partitions)
                _clean(ledger)
                audited += [whole.position, ledger.position]
                await asyncio.sleep(0.2)
            for command in (("audit", "all"), ("audit", "ledger"), ("replay", "--verify")):
                done = await asyncio.to_thread(cx, exchange_settings, *command, "--json")
                assert done.returncode == 0, done.stdout + done.stderr
                audited.append(json.loads(done.stdout)["position"])

            # Corrupt rows the trading never writes again: both audits still find them.
            async with store.engine.begin() as connection:
                await connection.execute(
                    update(tables.cash_balances)
                    .where(tables.cash_balances.c.account_id == "idle")
                    .values(available=tables.cash_balances.c.available + 1)
                )
                await connection.execute(
                    insert(tables.journal).values(
                        entry_id="forged",
                        leg=0,
                        position=1,
                        kind="deposit",
                        ts=0,
                        account="cash:idle",
                        amount=1,
                    )
                )
            whole = await audit(store, catalogue, exchange_settings.market_partitions)
            assert [str(d) for d in whole.discrepancies] == [
                "[projection] cash_balances shows idle at available 1001 fen, held 0 fen; the "
                "events give available 1000 fen, held 0 fen"
            ]
            ledger = await audit_ledger(store, catalogue, exchange_settings.market_partitions)
            found = {(d.kind, d.message) for d in ledger.discrepancies}
            assert ("unbalanced-entry", "journal entry forged sums to 1 fen, not 0") in found
            assert (
                "journal-incomplete",
                "cash:idle: the events give 1000 fen, the journal's entries give 1001 fen",
            ) in found
            done = await asyncio.to_thread(cx, exchange_settings, "audit", "ledger")
            assert done.returncode == 1
            # For people, in 元: no amount in fen is left in the text.
            assert "journal entry forged sums to 0.01 元, not 0" in done.stdout
            assert " fen" not in done.stdout
        finally:
            stop.set()
            placed = await trading
            await store.close()
        await settle(exchange.runtime)
    assert placed > 50
    # The audits read different points of a history that kept growing meanwhile.
    assert len(set(audited)) > 3, audited
