"""`cx audit` accounts for every way an order's open quantity changes.

Each test makes a history through the API of a running exchange, stops it, and runs the
`cx audit` command line on its event store: amends down and up, self-trade decrements, partial
fills, expiries, block orders, call auctions, delisting, the kill switch and a capacity
withdrawal beside a resting ask must all audit clean (exit 0). A tampered history must still
fail.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from cx.settings import Settings
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle
from tests.history.helpers import GZ0, Clock, cx, funded_buyer, funded_provider, ok, order

pytestmark = pytest.mark.e2e

GZ1 = "H100-80G.GZ.20271201T01"
YRD0 = "H100-80G.YRD.20271201T00"

Scenario = Callable[[RunningExchange, Clock], Awaitable[None]]


async def _history(settings: Settings, scenario: Scenario) -> None:
    """Run the scenario through the API until everything it sent has settled."""
    clock = Clock()
    async with running_exchange(settings, clock_ms=clock) as exchange:
        await scenario(exchange, clock)
        await settle(exchange.runtime)


def _audits_clean(settings: Settings) -> dict[str, Any]:
    done = cx(settings, "audit", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["discrepancies"] == []
    return report


def _stored(settings: Settings, event_type: str) -> list[dict[str, Any]]:
    with sqlite3.connect(settings.data_dir / "events.sqlite3") as db:
        rows = db.execute(
            "select data from events where type = ? order by position", (event_type,)
        ).fetchall()
    return [json.loads(data) for (data,) in rows]


async def _amends(exchange: RunningExchange, _: Clock) -> None:
    provider = await funded_provider(exchange, GZ0)
    buyer = await funded_buyer(exchange)
    bid = (await ok(buyer.post("/v1/orders", json=order("buy", 1800, 5))))["order_id"]
    down = await ok(buyer.patch(f"/v1/orders/{bid}", json={"quantity": 2}), 200)
    assert (down["remaining"], down["kept_priority"]) == (2, True)
    up = await ok(buyer.patch(f"/v1/orders/{bid}", json={"quantity": 7}), 200)
    assert up["remaining"] == 7
    ask = (await ok(provider.post("/v1/orders", json=order("sell", 1900, 10))))["order_id"]
    await ok(provider.patch(f"/v1/orders/{ask}", json={"quantity": 6}), 200)
    # Repriced into the bid: it trades 6 of the bid's 7 and leaves 1 resting.
    crossed = await ok(provider.patch(f"/v1/orders/{ask}", json={"price": 1800}), 200)
    assert crossed["price"] == 1800
    await settle(exchange.runtime)
    assert (await ok(buyer.get(f"/v1/orders/{bid}"), 200))["filled"] == 6


async def test_amends_down_up_and_into_a_trade_audit_clean(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await _history(settings, _amends)
    amended = [(e["remaining"], e["kept_priority"]) for e in _stored(settings, "OrderAmended")]
    assert amended == [(2, True), (7, False), (6, True), (6, False)]
    _audits_clean(settings)


async def _self_trades(exchange: RunningExchange, _: Clock) -> None:
    provider = await funded_provider(exchange, GZ0, GZ1)
    await ok(provider.post("/v1/accounts/p/deposits", json={"kind": "cash", "amount": 50_000}))
    decrement = {"stp_mode": "decrement"}
    # The incoming buy is smaller: the resting ask is reduced, the buy cancelled.
    await ok(provider.post("/v1/orders", json=order("sell", 1800, 5)))
    await ok(provider.post("/v1/orders", json=order("buy", 1800, 3, **decrement)))
    # The incoming buy is larger: the resting ask is cancelled, the buy reduced and rests.
    await ok(provider.post("/v1/orders", json=order("sell", 1800, 2, GZ1)))
    await ok(provider.post("/v1/orders", json=order("buy", 1800, 5, GZ1, **decrement)))
    # A resting order reduced by a decrement later fills what is left.
    buyer = await funded_buyer(exchange)
    await ok(buyer.post("/v1/orders", json=order("buy", 1800, 2)))


async def test_self_trade_decrements_audit_clean(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await _history(settings, _self_trades)
    reduced = [(e["quantity"], e["remaining"]) for e in _stored(settings, "OrderReduced")]
    assert reduced == [(3, 2), (2, 3)]
    assert len(_stored(settings, "TradeExecuted")) == 1
    _audits_clean(settings)


async def _fills_and_expiries(exchange: RunningExchange, clock: Clock) -> None:
    provider = await funded_provider(exchange, GZ0)
    buyer = await funded_buyer(exchange)
    await ok(provider.post("/v1/orders", json=order("sell", 1800, 3)))
    await ok(provider.post("/v1/orders", json=order("sell", 1810, 2)))
    # Partly filled, the rest rests; then partly filled again by an IOC whose rest is cancelled.
    await ok(buyer.post("/v1/orders", json=order("buy", 1800, 5)))
    await ok(provider.post("/v1/orders", json=order("sell", 1800, 1)))
    await ok(buyer.post("/v1/orders", json=order("buy", 1810, 4, time_in_force="IOC")))
    # A GTD bid, partly filled before it expires.
    expire_at = clock() + 60_000
    gtd = order("buy", 1790, 4, time_in_force="GTD", expire_at=expire_at)
    await ok(buyer.post("/v1/orders", json=gtd))
    await ok(provider.post("/v1/orders", json=order("sell", 1790, 1)))
    clock.advance(120_000)
    # The next record on the partition finds the GTD order due.
    await ok(buyer.post("/v1/orders", json=order("buy", 1700, 1)))


async def test_partial_fills_ioc_remainders_and_expiries_audit_clean(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await _history(settings, _fills_and_expiries)
    reasons = [e["reason"] for e in _stored(settings, "OrderCancelled")]
    assert "unfilled_ioc" in reasons
    assert "good_till_date" in reasons
    _audits_clean(settings)


async def _blocks(exchange: RunningExchange, _: Clock) -> None:
    provider = await funded_provider(exchange, GZ0, GZ1)
    buyer = await funded_buyer(exchange)
    operator = await exchange.operator()
    for symbol in (GZ0, GZ1):
        await ok(provider.post("/v1/orders", json=order("sell", 1800, 4, symbol)))
    filled = {"symbols": [GZ0, GZ1], "side": "buy", "price": 1800, "quantity": 3}
    assert (await ok(buyer.post("/v1/block-orders", json=filled)))["status"] == "accepted"
    # In continuous trading a block that cannot fill in every hour at once is cancelled.
    unfillable = {"symbols": [GZ0, GZ1], "side": "buy", "price": 1800, "quantity": 2}
    await ok(buyer.post("/v1/block-orders", json=unfillable))
    # A halted hour is not in a call phase: the block is cancelled there.
    await ok(operator.post("/v1/admin/market/halt", json={"reason": "drill"}), 200)
    await settle(exchange.runtime)
    halted = {"symbols": [GZ0, GZ1], "side": "sell", "price": 2500, "quantity": 2}
    await ok(provider.post("/v1/block-orders", json=halted))


async def test_block_orders_filled_and_cancelled_audit_clean(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await _history(settings, _blocks)
    assert len(_stored(settings, "TradeExecuted")) == 2
    cancelled = [(e["reason"], e["remaining"]) for e in _stored(settings, "OrderCancelled")]
    assert cancelled == [("block_not_filled", 4), ("not_continuous", 4)]
    _audits_clean(settings)


async def _auction(exchange: RunningExchange, _: Clock) -> None:
    provider = await funded_provider(exchange, GZ0)
    buyer = await funded_buyer(exchange)
    operator = await exchange.operator()
    await ok(operator.post(f"/v1/admin/contracts/{GZ0}/halt", json={"reason": "drill"}), 200)
    await settle(exchange.runtime)
    await ok(provider.post("/v1/orders", json=order("sell", 1700, 1)))
    await ok(provider.post("/v1/orders", json=order("sell", 1750, 2)))
    await ok(buyer.post("/v1/orders", json=order("buy", 1900, 2)))
    await ok(buyer.post("/v1/orders", json=order("buy", 1760, 1)))
    await ok(operator.post(f"/v1/admin/contracts/{GZ0}/resume", json={"reason": "done"}), 200)


async def test_a_call_auction_audits_clean(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await _history(settings, _auction)
    trades = _stored(settings, "TradeExecuted")
    assert [(t["price"], t["aggressor"]) for t in trades] == [(1750, None)] * 3
    _audits_clean(settings)


async def _delisting_and_kill_switch(exchange: RunningExchange, _: Clock) -> None:
    provider = await funded_provider(exchange, GZ0, YRD0)
    buyer = await funded_buyer(exchange)
    operator = await exchange.operator()
    await ok(provider.post("/v1/orders", json=order("sell", 1800, 5, YRD0)))
    await ok(buyer.post("/v1/orders", json=order("buy", 1800, 2, YRD0)))
    delist = {"reason": "provider outage"}
    await ok(operator.post(f"/v1/admin/contracts/{YRD0}/delist", json=delist), 200)
    await ok(buyer.post("/v1/orders", json=order("buy", 1700, 2)))
    await ok(buyer.post("/v1/orders", json=order("buy", 1710, 3)))
    await ok(provider.post("/v1/orders", json=order("sell", 1710, 1)))
    await settle(exchange.runtime)
    await ok(buyer.delete("/v1/orders"), 200)


async def test_delisting_and_the_kill_switch_audit_clean(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await _history(settings, _delisting_and_kill_switch)
    cancelled = sorted((e["reason"], e["remaining"]) for e in _stored(settings, "OrderCancelled"))
    assert cancelled == [("delisted", 3), ("kill_switch", 2), ("kill_switch", 2)]
    _audits_clean(settings)


async def _withdrawal_beside_an_ask(exchange: RunningExchange, _: Clock) -> None:
    provider = await funded_provider(exchange, GZ0)
    await ok(provider.post("/v1/orders", json=order("sell", 1800, 15)))
    withdrawal = {"kind": "capacity", "symbol": GZ0, "quantity": 5, "withdrawal_id": "w-1"}
    await ok(provider.post("/v1/accounts/p/withdrawals", json=withdrawal))
    too_much = {"kind": "capacity", "symbol": GZ0, "quantity": 1, "withdrawal_id": "w-2"}
    refused = await provider.post("/v1/accounts/p/withdrawals", json=too_much)
    assert refused.status_code == 422, refused.text
    buyer = await funded_buyer(exchange)
    await ok(buyer.post("/v1/orders", json=order("buy", 1800, 4)))


async def test_a_capacity_withdrawal_beside_a_resting_ask_audits_clean(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    await _history(settings, _withdrawal_beside_an_ask)
    assert [e["quantity"] for e in _stored(settings, "CapacityWithdrawn")] == [5]
    _audits_clean(settings)


async def test_a_tampered_amend_or_decrement_still_fails_the_audit(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)

    async def both(exchange: RunningExchange, clock: Clock) -> None:
        await _self_trades(exchange, clock)
        bid = await ok((await exchange.as_("b")).post("/v1/orders", json=order("buy", 1700, 5)))
        await ok(
            (await exchange.as_("b")).patch(f"/v1/orders/{bid['order_id']}", json={"quantity": 2}),
            200,
        )

    await _history(settings, both)
    _audits_clean(settings)
    database = settings.data_dir / "events.sqlite3"
    pristine = tmp_path / "pristine.sqlite3"
    # SQLite's backup API copies the database with what its write-ahead log holds, and every
    # connection is closed before the audit opens the file.
    with closing(sqlite3.connect(database)) as live, closing(sqlite3.connect(pristine)) as kept:
        live.backup(kept)
    for event_type, field, change in (
        ("OrderAmended", "remaining", 1),
        ("OrderReduced", "quantity", -1),
    ):
        with closing(sqlite3.connect(pristine)) as kept, closing(sqlite3.connect(database)) as db:
            kept.backup(db)
            position, data = db.execute(
                "select position, data from events where type = ? order by position limit 1",
                (event_type,),
            ).fetchone()
            tampered = json.loads(data)
            tampered[field] += change
            with db:
                db.execute(
                    "update events set data = ? where position = ?",
                    (json.dumps(tampered), position),
                )
        done = cx(settings, "audit", "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stdout, done.stderr
        found = json.loads(done.stdout)["discrepancies"]
        assert any(tampered["order_id"] in d["message"] for d in found), (event_type, found)
