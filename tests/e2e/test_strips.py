"""A week of cards through the API, embedded and on Kafka and PostgreSQL, on a test clock: it is
listed with its term and hours, bought at a price per card-hour, cascades into its 168 hourly
contracts when the first of them lists, and an hour of it is resold; the cascaded week refuses
orders saying into what it cascaded; the statement shows the cascade; the audit's replay
reproduces every state hash settlement recorded and finds money and capacity conserved.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from cx.settings import Settings
from exchange.domain.catalogue import CHINA_STANDARD_TIME, to_utc_ms
from exchange.domain.messages import ControlMarket
from settlement.audit import audit
from settlement.service import SettlementRunner
from tests.e2e.harness import LogClock, RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

WEEK = "H100-80G.GZ.W20271206"
FIRST = "H100-80G.GZ.20271206T00"
FIFTH = "H100-80G.GZ.20271206T05"
TRADING = to_utc_ms(datetime(2027, 11, 29, 10, tzinfo=CHINA_STANDARD_TIME))
CASCADE = to_utc_ms(datetime(2027, 12, 4, tzinfo=CHINA_STANDARD_TIME))


async def _post(
    exchange: RunningExchange, account: str, path: str, body: Any, role: str = "buyer"
) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _account(exchange: RunningExchange, account: str) -> Any:
    return (await (await exchange.as_(account)).get(f"/v1/accounts/{account}")).json()


def _order(symbol: str, side: str, price: int, quantity: int) -> dict[str, Any]:
    return {"symbol": symbol, "side": side, "price": price, "quantity": quantity}


async def test_a_week_is_bought_cascaded_and_resold_by_the_hour(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings.model_copy(
        update={
            "listings": "H100-80G.GZ",
            "listing_days": 2,
            "term_days": 14,
            "fees": "H100-80G:-10:20",
            "bond_bps": 333,
        }
    )
    clock = LogClock(TRADING)
    async with running_exchange(settings, clock) as exchange:
        deposit = {"kind": "cash", "amount": 1_000_000}
        for account, role in (("p1", "provider"), ("b1", "buyer"), ("b2", "buyer")):
            await _post(exchange, account, f"/v1/accounts/{account}/deposits", deposit, role)
        capacity = {"kind": "capacity", "symbol": WEEK, "quantity": 10}
        await _post(exchange, "p1", "/v1/accounts/p1/deposits", capacity, "provider")
        # The market data's clock is the log's: listings show once a record moved it.
        await settle(exchange.runtime)
        contract = (await exchange.client.get(f"/v1/contracts/{WEEK}")).json()
        assert {k: contract[k] for k in ("term", "hours", "cascades_at", "delivery_end")} == {
            "term": "W",
            "hours": 168,
            "cascades_at": "2027-12-04T00:00:00+08:00",
            "delivery_end": "2027-12-13T00:00:00+08:00",
        }
        assert contract["term_name"] == (
            "一周的每个小时 (北京时间周一 00:00 至下周一 00:00) "
            "every hour of one week, Monday 00:00 to Monday 00:00 CST"
        )
        listed = (await exchange.client.get("/v1/contracts")).json()
        assert {c["term_name"] for c in listed if c["term"] == "H"} == {
            "单个交付小时 one delivery hour"
        }
        assert {c["symbol"]: c["term"] for c in listed if c["term"] != "H"} == {
            "H100-80G.GZ.W20271206": "W",
            "H100-80G.GZ.N20271206": "N",
            "H100-80G.GZ.W20271213": "W",
            "H100-80G.GZ.N20271213": "N",
        }

        await _post(exchange, "p1", "/v1/orders", _order(WEEK, "sell", 1_010, 4), "provider")
        await _post(exchange, "b1", "/v1/orders", _order(WEEK, "buy", 1_010, 4))
        await settle(exchange.runtime)

        # 4 cards x 168 hours x 10.10 元 and the 0.2% taker fee; the provider's bond, 3.33%
        # of a card's week (5,650.344 fen, rounded up), behind each card sold.
        b1 = await _account(exchange, "b1")
        assert b1["cash"] == {"available": 1_000_000 - 678_720 - 1_357, "held": 0}
        assert b1["positions"] == [{"symbol": WEEK, "quantity": 4}]
        p1 = await _account(exchange, "p1")
        assert p1["cash"] == {"available": 1_000_000 - 4 * 5_651, "held": 0}
        trades = (await exchange.client.get(f"/v1/contracts/{WEEK}/trades")).json()
        assert [(t["price"], t["quantity"]) for t in trades] == [(1_010, 4)]

        clock.now_ms = CASCADE
        await exchange.runtime.submit(
            ControlMarket(operator_id="clock", action="tick", symbol=FIRST)
        )
        await settle(exchange.runtime)

        # The week's position and capacity are emptied into its hours.
        b1 = await _account(exchange, "b1")
        held = {p["symbol"]: p["quantity"] for p in b1["positions"]}
        assert held.pop(WEEK) == 0
        assert len(held) == 168
        assert set(held.values()) == {4}
        assert held[FIRST] == 4
        p1 = await _account(exchange, "p1")
        capacity = {c["symbol"]: (c["available"], c["held"]) for c in p1["capacity"]}
        assert capacity.pop(WEEK) == (0, 0)
        assert len(capacity) == 168
        assert set(capacity.values()) == {(6, 0)}

        late = await (await exchange.as_("b2")).post(
            "/v1/orders", json=_order(WEEK, "buy", 1_010, 1)
        )
        assert late.status_code in (404, 422), late.text
        assert late.json()["detail"] == (
            f"contract {WEEK!r} is retired: it cascaded at 2027-12-04T00:00:00+08:00 into its "
            f"168 hourly contracts {FIRST} to H100-80G.GZ.20271212T23; trade those"
        )

        await _post(exchange, "b1", "/v1/orders", _order(FIFTH, "sell", 1_200, 1))
        await _post(exchange, "b2", "/v1/orders", _order(FIFTH, "buy", 1_200, 1))
        await settle(exchange.runtime)
        b1 = await _account(exchange, "b1")
        # Paid 12.00 元 out of the hour's escrow with a 1 fen maker rebate.
        assert b1["cash"]["available"] == 1_000_000 - 678_720 - 1_357 + 1_200 + 1
        assert {p["symbol"]: p["quantity"] for p in b1["positions"]}[FIFTH] == 3
        b2 = await _account(exchange, "b2")
        assert b2["cash"] == {"available": 1_000_000 - 1_200 - 2, "held": 0}

        statement = (
            await (await exchange.as_("b1")).get("/v1/statements", params={"month": "2027-12"})
        ).json()
        assert [
            (c["symbol"], c["role"], c["units"], c["hours"]) for c in statement["cascades"]
        ] == [(WEEK, "holder", 4, 168)]
        pdf = await (await exchange.as_("b1")).get(
            "/v1/statements", params={"month": "2027-12", "format": "pdf"}
        )
        text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
        assert "Strips cascaded into their hourly contracts" in text
        assert WEEK in text
        provider = (
            await (await exchange.as_("p1")).get("/v1/statements", params={"month": "2027-12"})
        ).json()
        assert [(c["role"], c["units"], c["amount"]) for c in provider["cascades"]] == [
            ("provider", 4, 678_720)
        ]

        # The audit replays the store from the start: the state it reaches is the one
        # settlement keeps live, and it finds money and capacity conserved across the cascade.
        report = await audit(
            exchange.runtime.store,
            exchange.runtime.catalogue,
            exchange.runtime.topics.market_partitions,
        )
        assert report.discrepancies == []
        settlement = exchange.runtime.running["settlement"]
        assert isinstance(settlement, SettlementRunner)
        assert report.state_hash == settlement.projection.state.state_hash()


WINDOW_START = to_utc_ms(datetime(2027, 11, 30, tzinfo=CHINA_STANDARD_TIME))
WINDOW_END = to_utc_ms(datetime(2027, 12, 13, tzinfo=CHINA_STANDARD_TIME))


async def test_a_strip_delisted_early_shows_when_it_cascaded_not_when_it_was_planned(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings.model_copy(
        update={"listings": "H100-80G.GZ", "listing_days": 2, "term_days": 14}
    )
    clock = LogClock(TRADING)
    async with running_exchange(settings, clock) as exchange:
        deposit = {"kind": "cash", "amount": 1_000_000}
        for account, role in (("p1", "provider"), ("b1", "buyer")):
            await _post(exchange, account, f"/v1/accounts/{account}/deposits", deposit, role)
        capacity = {"kind": "capacity", "symbol": WEEK, "quantity": 2}
        await _post(exchange, "p1", "/v1/accounts/p1/deposits", capacity, "provider")
        await _post(exchange, "p1", "/v1/orders", _order(WEEK, "sell", 1_010, 2), "provider")
        await _post(exchange, "b1", "/v1/orders", _order(WEEK, "buy", 1_010, 2))
        await settle(exchange.runtime)
        planned = (await exchange.client.get(f"/v1/contracts/{WEEK}")).json()["cascades_at"]
        assert planned == "2027-12-04T00:00:00+08:00"

        delisted_at = TRADING + 3_600_000
        clock.now_ms = delisted_at
        operator = await exchange.operator()
        answer = await operator.post(
            f"/v1/admin/contracts/{WEEK}/delist", json={"reason": "provider outage"}
        )
        assert answer.status_code == 200, answer.text
        await settle(exchange.runtime)

        b1 = await _account(exchange, "b1")
        held = {p["symbol"]: p["quantity"] for p in b1["positions"]}
        assert held[FIRST] == 2, "the delisting cascaded the week into its hours"
        contract = (await exchange.client.get(f"/v1/contracts/{WEEK}")).json()
        assert contract["cascades_at"] == "2027-11-29T11:00:00+08:00"


async def test_a_need_is_bought_as_a_week_strip_fill_or_kill_when_it_is_the_cheapest(
    tmp_path: Path,
) -> None:
    """Embedded: a need of 2 cards for 24 hours between Nov 30 and Dec 13. The hourly
    contracts listed in the window (Nov 30 and Dec 1) offer nothing, the week from Dec 6 offers
    1 card at 1.50 元 and 5 at 1.60 元 a card-hour: the planner walks the week for 2 cards and
    places one fill-or-kill order on it, which fills at 1 x 150 + 1 x 160 fen for every one of
    its 168 hours. A need of 200 hours, which no block and no strip in the window serves, is
    refused with its own reason."""
    settings = settings_for(tmp_path, CX_LISTINGS="H100-80G.GZ", CX_LISTING_DAYS=2, CX_TERM_DAYS=14)
    async with running_exchange(settings, LogClock(TRADING)) as exchange:
        deposit = {"kind": "cash", "amount": 1_000_000}
        for account, role in (("p1", "provider"), ("b1", "buyer")):
            await _post(exchange, account, f"/v1/accounts/{account}/deposits", deposit, role)
        capacity = {"kind": "capacity", "symbol": WEEK, "quantity": 10}
        await _post(exchange, "p1", "/v1/accounts/p1/deposits", capacity, "provider")
        await _post(exchange, "p1", "/v1/orders", _order(WEEK, "sell", 150, 1), "provider")
        await _post(exchange, "p1", "/v1/orders", _order(WEEK, "sell", 160, 5), "provider")
        await settle(exchange.runtime)

        need = {
            "client_need_id": "week-run",
            "unit": "cards",
            "quantity": 2,
            "hours": 24,
            "earliest_start": WINDOW_START,
            "deadline": WINDOW_END,
            "regions": [{"region": "GZ"}],
            "max_total": 120_000,
        }
        placed = await _post(exchange, "b1", "/v1/needs", need)
        chosen = placed["plan"]["chosen"]
        # (150 + 160) x 168 = 52,080 fen; its limit, the dearer ask, 160 x 2 x 168 = 53,760.
        assert {k: chosen[k] for k in ("kind", "symbols", "hours", "cost", "limit_price")} == {
            "kind": "strip",
            "symbols": [WEEK],
            "hours": 168,
            "cost": 52_080,
            "limit_price": 160,
        }
        assert placed["plan"]["explanation"].startswith(
            f"week strip {WEEK} (168 h): 52080 fen at the asks + 0 fen region adder = 52080"
        )
        hourly = [a for a in placed["plan"]["alternatives"] if a["kind"] == "hourly_block"]
        # Every start hour from Nov 30 00:00 to Dec 1 00:00 whose 24 hours are listed.
        assert len(hourly) == 25
        assert {a["reason"] for a in hourly} == {"insufficient_depth"}
        assert hourly[0]["detail"].startswith("hourly block: ")
        assert {k: placed["order"][k] for k in ("kind", "symbols", "price", "quantity")} == {
            "kind": "strip",
            "symbols": [WEEK],
            "price": 160,
            "quantity": 2,
        }
        await settle(exchange.runtime)
        got = (await (await exchange.as_("b1")).get("/v1/needs/" + placed["need_id"])).json()
        assert (got["status"], got["order"]["filled"], got["order"]["paid"]) == (
            "filled",
            2,
            52_080,
        )
        order = (
            await (await exchange.as_("b1")).get(f"/v1/orders/{placed['order']['order_id']}")
        ).json()
        assert (order["symbol"], order["status"], order["filled"]) == (WEEK, "filled", 2)
        # Sent fill-or-kill: all the need's cards at once or nothing, and nothing rests.
        stored = await exchange.runtime.store.read_all(limit=10_000)
        accepted = [
            e.data
            for e in stored
            if e.type == "OrderAccepted" and e.data.get("order_id") == order["order_id"]
        ]
        assert [(a["time_in_force"], a["price"], a["quantity"]) for a in accepted] == [
            ("FOK", 160, 2)
        ]
        b1 = await _account(exchange, "b1")
        assert b1["cash"] == {"available": 1_000_000 - 52_080, "held": 0}
        assert b1["positions"] == [{"symbol": WEEK, "quantity": 2}]

        too_long = await (await exchange.as_("b1")).post(
            "/v1/needs", json={**need, "client_need_id": "too-long", "hours": 200}
        )
        assert too_long.status_code == 422, too_long.text
        problem = too_long.json()
        assert (problem["type"], problem["reason"]) == (
            "/problems/no_feasible_plan",
            "no_strip_serves_long_need",
        )
        assert "longer than a block's 24 h" in problem["detail"]
