"""An outside tester's money defect, through the API of an exchange on a test clock, embedded
and on Kafka and PostgreSQL: a holder resold part of a token bundle, disputed it, and the
operator's resolution settled it (the unused rest refunded) while the resale still rested, so a
later buyer bought units already refunded and was owed them by no one. Now the resale is
cancelled when the obligation settles (`obligation_settled`), a new one is refused, every
balance adds up to the fen and the audit is clean; the audit reports the defect on a history
that has it. An hour's resale after a dispute settled it is refused too, changing nothing."""

from __future__ import annotations

from typing import Any

import pytest

from cx.settings import Settings
from exchange.domain.catalogue import parse_symbol, to_utc_ms
from exchange.domain.market import MarketStage
from exchange.domain.messages import ControlMarket
from settlement.audit import audit, audit_ledger
from tests.compiled import planted_on_pure_python
from tests.e2e.harness import LogClock, RunningExchange, running_exchange, settings_for, settle
from tests.e2e.test_statements import USCC
from tests.e2e.test_token_bundles import _cx_meter

pytestmark = pytest.mark.e2e

BUNDLE = "TOK-QWEN.YRD.W20261130"
START = to_utc_ms(parse_symbol(BUNDLE).delivery_start)
END = to_utc_ms(parse_symbol(BUNDLE).delivery_end)
HOUR = 3_600_000
DAY = 24 * HOUR
CASH = 100_000


async def _post(
    exchange: RunningExchange, account: str, role: str, path: str, body: Any, status: int = 201
) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


async def _get(exchange: RunningExchange, account: str, path: str, **params: Any) -> Any:
    response = await (await exchange.as_(account)).get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def _tick(exchange: RunningExchange, clock: LogClock, at: int, symbol: str) -> None:
    clock.now_ms = at
    await exchange.runtime.submit(ControlMarket(operator_id="clock", action="tick", symbol=symbol))
    await settle(exchange.runtime)


async def _cash(exchange: RunningExchange, account: str) -> dict[str, int]:
    cash: dict[str, int] = (await _get(exchange, account, f"/v1/accounts/{account}"))["cash"]
    return cash


async def _hz_2026(exchange: RunningExchange) -> None:
    """Hangzhou's programme `hz-2026` pays 20% of token purchases; buyer-1's grant of it."""
    programme = {
        "programme_id": "hz-2026", "issuer": "Hangzhou", "budget": 100_000,
        "rate_bps": 2_000, "cap_per_contract": 10_000, "cap_per_enterprise": 100_000,
        "classes": ["TOK-QWEN"], "regions": ["YRD"], "cities": ["hangzhou"],
        "valid_from": START - 30 * DAY, "valid_until": END + 30 * DAY,
    }  # fmt: skip
    await _post(exchange, "hz-admin", "programme_admin", "/v1/programmes", programme)
    enterprise = {
        "name": "杭州小微模型应用有限公司", "uscc": USCC, "kind": "sme", "city": "hangzhou"
    }  # fmt: skip
    await _post(exchange, "buyer-1", "buyer", "/v1/accounts/buyer-1/enterprise", enterprise)
    application = {"application_id": "b1-tokens", "amount": 50_000, "intended_use": "客服模型"}
    await _post(exchange, "buyer-1", "buyer", "/v1/programmes/hz-2026/applications", application)
    approval = {"application_id": "b1-tokens", "limit": 50_000}
    await _post(exchange, "hz-admin", "programme_admin", "/v1/programmes/hz-2026/grants", approval)


def _settings(base: Settings, listings: str) -> Settings:
    return base.model_copy(
        update={
            "fees": "TOK-QWEN:0:10",
            "bond_bps": 1_000,
            "delivery_window_minutes": 60,
            "listings": listings,
            "listing_days": 2,
            "term_days": 40,
        }
    )


async def _to_the_resolution(exchange: RunningExchange, clock: LogClock) -> str:
    """Steps 1 to 5 of the report: returns buyer-1's resale order id."""
    await _hz_2026(exchange)
    for account, role, body in (
        ("provider-2", "provider", {"kind": "cash", "amount": CASH}),
        ("provider-2", "provider", {"kind": "capacity", "symbol": BUNDLE, "quantity": 100}),
        ("buyer-1", "buyer", {"kind": "cash", "amount": CASH}),
        ("buyer-2", "buyer", {"kind": "cash", "amount": CASH}),
    ):
        await _post(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
    ask = {"symbol": BUNDLE, "side": "sell", "price": 500, "quantity": 100}
    await _post(exchange, "provider-2", "provider", "/v1/orders", ask)
    bid = {"symbol": BUNDLE, "side": "buy", "price": 500, "quantity": 10, "voucher": "hz-2026"}
    await _post(exchange, "buyer-1", "buyer", "/v1/orders", bid)
    early = {"symbol": BUNDLE, "side": "buy", "price": 500, "quantity": 4}
    await _post(exchange, "buyer-2", "buyer", "/v1/orders", early)
    await settle(exchange.runtime)

    await _tick(exchange, clock, START, BUNDLE)
    clock.now_ms = START + 20 * HOUR
    key = await exchange.key_for("provider-2", "provider")
    metered = await _cx_meter(exchange, key, BUNDLE, "buyer-1", "--tokens", "1250000", "--id", "m1")
    assert metered.returncode == 0, metered.stderr
    resale = {"symbol": BUNDLE, "side": "sell", "price": 600, "quantity": 8}
    placed = await _post(exchange, "buyer-1", "buyer", "/v1/orders", resale)
    await settle(exchange.runtime)
    book = await _get(exchange, "buyer-2", f"/v1/contracts/{BUNDLE}/book")
    assert book["asks"] == [[500, 86], [600, 8]]

    dispute = {
        "symbol": BUNDLE, "provider_id": "provider-2", "dispute_id": "dp1", "reason": "用量不符"
    }  # fmt: skip
    await _post(exchange, "buyer-1", "buyer", "/v1/deliveries/disputes", dispute)
    await settle(exchange.runtime)
    operator = await exchange.operator()
    resolution = {
        "symbol": BUNDLE, "provider_id": "provider-2", "buyer_id": "buyer-1",
        "delivered": 1_000_000, "reason": "x",
    }  # fmt: skip
    resolved = await operator.post("/v1/admin/deliveries/resolve", json=resolution)
    assert resolved.status_code in (200, 201), resolved.text
    await settle(exchange.runtime)
    order_id: str = placed["order_id"]
    return order_id


async def test_a_bundle_s_resale_is_cancelled_when_its_dispute_is_resolved(
    exchange_settings: Settings,
) -> None:
    clock = LogClock(START - 10 * DAY)
    async with running_exchange(_settings(exchange_settings, "TOK-QWEN.YRD"), clock) as exchange:
        resale = await _to_the_resolution(exchange, clock)
        # buyer-1 paid 50.00 元 for 10 million tokens, 10.00 元 of it the voucher's, and a
        # 5 fen taker fee; 6.25 元 was drawn down for 1,250,000 tokens. The resolution found
        # fewer used than metered: 43.75 元 refunded, 8.75 元 of it the voucher's share of the
        # unused 8,750,000 tokens, back to the grant.
        assert await _cash(exchange, "buyer-1") == {
            "available": CASH - (5_000 - 1_000 + 5) + (4_375 - 875),
            "held": 0,
        }
        orders = await _get(exchange, "buyer-1", "/v1/orders", status="cancelled")
        assert [(o["order_id"], o["quantity"], o["filled"], o["reason"]) for o in orders] == [
            (resale, 8, 0, "obligation_settled")
        ]
        book = await _get(exchange, "buyer-2", f"/v1/contracts/{BUNDLE}/book")
        assert book["asks"] == [[500, 86]]

        # A new resale is refused, saying why, and holds nothing.
        client = await exchange.as_("buyer-1")
        again = await client.post(
            "/v1/orders", json={"symbol": BUNDLE, "side": "sell", "price": 600, "quantity": 1}
        )
        assert again.status_code == 422, again.text
        assert again.json()["type"] == "/problems/obligation_settled"
        assert "settled when its dispute was resolved" in again.json()["detail"]

        # buyer-2's 88 at 6.00 元 buy provider-2's 86 at 5.00 元, and nothing of buyer-1's.
        bid = {"symbol": BUNDLE, "side": "buy", "price": 600, "quantity": 88}
        await _post(exchange, "buyer-2", "buyer", "/v1/orders", bid)
        await settle(exchange.runtime)
        assert await _cash(exchange, "buyer-1") == {"available": CASH - 4_005 + 3_500, "held": 0}
        # 4 at 5.00 元 (2 fen fee), 86 at 5.00 元 (43 fen fee), 2 at 6.00 元 still bid: 1,200
        # and the most its fee can be (1.2 fen, rounded up) held.
        assert await _cash(exchange, "buyer-2") == {
            "available": CASH - 2_002 - 43_043 - 1_202,
            "held": 1_202,
        }
        deliveries = await _get(exchange, "buyer-2", "/v1/deliveries")
        owed = [(d["provider_id"], d["quantity"]) for d in deliveries if d["symbol"] == BUNDLE]
        assert owed == [("provider-2", 90)]
        positions = (await _get(exchange, "buyer-2", "/v1/accounts/buyer-2"))["positions"]
        assert [(p["symbol"], p["quantity"]) for p in positions] == [(BUNDLE, 90)]
        # provider-2: a 50 fen bond a unit for the 100 it sold, 625 drawn down, buyer-1's
        # share of the bond (500) back.
        assert await _cash(exchange, "provider-2") == {
            "available": CASH - 5_000 + 625 + 500,
            "held": 0,
        }

        audit_report = await (await exchange.operator()).get("/v1/admin/audit")
        assert audit_report.json()["discrepancies"] == [], audit_report.text
        store, catalogue = exchange.runtime.store, exchange.runtime.catalogue
        assert (
            await audit_ledger(store, catalogue, exchange.runtime.topics.market_partitions)
        ).discrepancies == []

        # The period ends: buyer-2's 90 settle unused, all refunded, the bond back.
        await _tick(exchange, clock, END + HOUR + 1, BUNDLE)
        assert await _cash(exchange, "buyer-2") == {"available": CASH - 2 - 43, "held": 0}
        assert await _cash(exchange, "provider-2") == {"available": CASH + 625, "held": 0}
        assert await _cash(exchange, "buyer-1") == {"available": CASH - 4_005 + 3_500, "held": 0}
        assert (
            await audit(store, catalogue, exchange.runtime.topics.market_partitions)
        ).discrepancies == []
        assert (
            await audit_ledger(store, catalogue, exchange.runtime.topics.market_partitions)
        ).discrepancies == []


async def test_the_audit_reports_a_resale_of_a_settled_bundle(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history with the defect (matching as it was: no cancel, no refusal) is reported."""
    name = test_the_audit_reports_a_resale_of_a_settled_bundle.__name__
    if planted_on_pure_python(f"tests/e2e/test_resale_after_settlement.py::{name}"):
        return
    monkeypatch.setattr(MarketStage, "_cancel_unheld_resales", lambda self, caused, ts: [])
    monkeypatch.setattr(MarketStage, "_resale_unheld", lambda self, order, ts: None)
    clock = LogClock(START - 10 * DAY)
    settings = _settings(settings_for(tmp_path), "TOK-QWEN.YRD")
    async with running_exchange(settings, clock) as exchange:
        await _to_the_resolution(exchange, clock)
        bid = {"symbol": BUNDLE, "side": "buy", "price": 600, "quantity": 88}
        await _post(exchange, "buyer-2", "buyer", "/v1/orders", bid)
        await settle(exchange.runtime)
        # The defect: buyer-1 was paid 12.00 元 (a maker pays no fee) for 2 million tokens
        # refunded to it already.
        assert await _cash(exchange, "buyer-1") == {
            "available": CASH - 4_005 + 3_500 + 1_200,
            "held": 0,
        }
        runtime = exchange.runtime
        report = await audit(runtime.store, runtime.catalogue, runtime.topics.market_partitions)
        found = [(d.kind, d.message) for d in report.discrepancies]
        assert any(
            kind == "resale-beyond-holding"
            and f"resold 2 units of {BUNDLE} of buyer-1, leaving it -2" in message
            for kind, message in found
        ), found
        assert any(
            kind == "position-uncovered"
            and f"account buyer-2 holds 92 units of {BUNDLE}" in message
            and "cover 90: 2 units are owed by no provider" in message
            for kind, message in found
        ), found


HOUR_SYMBOL = "H100-80G.GZ.20261201T10"
DELIVERY = to_utc_ms(parse_symbol(HOUR_SYMBOL).delivery_start)


async def test_an_hour_s_resale_after_its_dispute_settled_is_refused(
    exchange_settings: Settings,
) -> None:
    clock = LogClock(DELIVERY - 10 * HOUR)
    settings = _settings(exchange_settings, "H100-80G.GZ").model_copy(
        update={"fees": "H100-80G:0:10"}
    )
    async with running_exchange(settings, clock) as exchange:
        for account, role, body in (
            ("provider-2", "provider", {"kind": "cash", "amount": CASH}),
            ("provider-2", "provider", {"kind": "capacity", "symbol": HOUR_SYMBOL, "quantity": 5}),
            ("buyer-1", "buyer", {"kind": "cash", "amount": CASH}),
        ):
            await _post(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
        ask = {"symbol": HOUR_SYMBOL, "side": "sell", "price": 2_000, "quantity": 5}
        await _post(exchange, "provider-2", "provider", "/v1/orders", ask)
        bid = {"symbol": HOUR_SYMBOL, "side": "buy", "price": 2_000, "quantity": 5}
        await _post(exchange, "buyer-1", "buyer", "/v1/orders", bid)
        await settle(exchange.runtime)

        await _tick(exchange, clock, DELIVERY + HOUR // 2, HOUR_SYMBOL)
        meter = {"symbol": HOUR_SYMBOL, "buyer_id": "buyer-1", "delivered": 5}
        await _post(exchange, "provider-2", "provider", "/v1/deliveries/metering", meter)
        dispute = {
            "symbol": HOUR_SYMBOL, "provider_id": "provider-2", "dispute_id": "dp1",
            "reason": "只交付了三卡时",
        }  # fmt: skip
        await _post(exchange, "buyer-1", "buyer", "/v1/deliveries/disputes", dispute)
        await settle(exchange.runtime)
        resolution = {
            "symbol": HOUR_SYMBOL, "provider_id": "provider-2", "buyer_id": "buyer-1",
            "delivered": 3, "reason": "x",
        }  # fmt: skip
        resolved = await (await exchange.operator()).post(
            "/v1/admin/deliveries/resolve", json=resolution
        )
        assert resolved.status_code in (200, 201), resolved.text
        await settle(exchange.runtime)
        # 10,000 escrowed (and a 10 fen fee); 3 card-hours delivered: 6,000 paid, 4,000
        # refunded and 2 units' share of the 1,000 bond (400) as the penalty.
        settled = {"available": CASH - 10_010 + 4_000 + 400, "held": 0}
        assert await _cash(exchange, "buyer-1") == settled
        assert await _cash(exchange, "provider-2") == {"available": CASH + 6_000 - 400, "held": 0}

        client = await exchange.as_("buyer-1")
        resale = await client.post(
            "/v1/orders",
            json={"symbol": HOUR_SYMBOL, "side": "sell", "price": 2_500, "quantity": 1},
        )
        assert resale.status_code == 422, resale.text
        assert resale.json()["type"] == "/problems/contract_closed"
        assert "holds none of" in resale.json()["detail"]
        assert "what it held settled" in resale.json()["detail"]
        await settle(exchange.runtime)
        assert await _cash(exchange, "buyer-1") == settled
        positions = (await _get(exchange, "buyer-1", "/v1/accounts/buyer-1"))["positions"]
        assert [(p["symbol"], p["quantity"]) for p in positions if p["quantity"]] == []
        store, catalogue = exchange.runtime.store, exchange.runtime.catalogue
        assert (
            await audit(store, catalogue, exchange.runtime.topics.market_partitions)
        ).discrepancies == []
        assert (
            await audit_ledger(store, catalogue, exchange.runtime.topics.market_partitions)
        ).discrepancies == []
