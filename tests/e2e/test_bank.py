"""The compute bank through the API, on the embedded default and on real Kafka and PostgreSQL.

A western provider deposits night capacity with a standing ask; an eastern one dearer capacity.
A buyer states a need that accepts both regions and gets the cheaper one, resells part of it,
and delivery settles with one shortfall. Every balance is checked to the fen. The exchange runs
on a test clock (the log's time), so the delivery hour comes when the test says.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cx.settings import Settings
from cx.ticker import tick_symbols
from exchange.domain.catalogue import CHINA_STANDARD_TIME, to_utc_ms
from exchange.domain.messages import ControlMarket
from tests.e2e.harness import (
    LogClock,
    RunningExchange,
    eventually,
    running_exchange,
    settings_for,
    settle,
)

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
GZ1 = "H100-80G.GZ.20271201T01"
YRD0 = "H100-80G.YRD.20271201T00"
HOUR = 3_600_000
MIDNIGHT = to_utc_ms(datetime(2027, 12, 1, tzinfo=CHINA_STANDARD_TIME))


async def _post(exchange: RunningExchange, account: str, path: str, body: Any, role: str) -> Any:
    client = await exchange.as_(account, role)
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def _tick(exchange: RunningExchange, clock: LogClock, at: int) -> None:
    """Move the log's clock and let every contract's partition see the time."""
    clock.now_ms = at
    for symbol in (GZ0, YRD0):
        await exchange.runtime.submit(
            ControlMarket(operator_id="clock", action="tick", symbol=symbol)
        )
    await settle(exchange.runtime)


async def test_night_capacity_a_need_across_regions_resale_and_a_short_delivery(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings.model_copy(
        update={"bond_bps": 1_000, "delivery_window_minutes": 60}
    )
    clock = LogClock(MIDNIGHT - 12 * HOUR)
    async with running_exchange(settings, clock) as exchange:
        for account, role, amount in (
            ("gz-dc", "provider", 10_000),
            ("yrd-dc", "provider", 10_000),
            ("sme", "buyer", 100_000),
            ("opc", "buyer", 5_000),
        ):
            deposit = {"kind": "cash", "amount": amount}
            await _post(exchange, account, f"/v1/accounts/{account}/deposits", deposit, role)
        night = {
            "resource_class": "H100-80G",
            "quantity": 4,
            "first_day": "2027-12-01",
            "from_hour": 0,
            "to_hour": 2,
        }
        west = await _post(
            exchange,
            "gz-dc",
            "/v1/accounts/gz-dc/capacity-deposits",
            {**night, "region": "GZ", "reserve_price": 1_500, "deposit_id": "gz-night"},
            "provider",
        )
        assert west["contracts"] == [GZ0, GZ1]
        await _post(
            exchange,
            "yrd-dc",
            "/v1/accounts/yrd-dc/capacity-deposits",
            {**night, "region": "YRD", "reserve_price": 2_000, "deposit_id": "yrd-night"},
            "provider",
        )
        await settle(exchange.runtime)
        await eventually(
            lambda: _book_shows(exchange, GZ1, [[1_500, 4]]), what="the western asks to rest"
        )

        need = await _post(
            exchange,
            "sme",
            "/v1/needs",
            {
                "client_need_id": "render-job",
                "unit": "cards",
                "quantity": 4,
                "hours": 2,
                "earliest_start": MIDNIGHT,
                "deadline": MIDNIGHT + 2 * HOUR,
                "regions": [{"region": "GZ"}, {"region": "YRD"}],
                "max_total": 20_000,
            },
            "buyer",
        )
        assert need["plan"]["chosen"]["family"] == "H100-80G.GZ", need
        await settle(exchange.runtime)

        resale = await _post(
            exchange,
            "sme",
            "/v1/orders",
            {"symbol": GZ0, "side": "sell", "price": 1_700, "quantity": 1},
            "buyer",
        )
        assert resale["status"] == "accepted", resale
        await _post(
            exchange,
            "opc",
            "/v1/orders",
            {"symbol": GZ0, "side": "buy", "price": 1_700, "quantity": 1},
            "buyer",
        )
        await settle(exchange.runtime)
        sme = await exchange.as_("sme")
        positions = (await sme.get("/v1/accounts/sme")).json()["positions"]
        assert positions == [{"symbol": GZ0, "quantity": 3}, {"symbol": GZ1, "quantity": 4}]

        await _tick(exchange, clock, MIDNIGHT)
        await _tick(exchange, clock, MIDNIGHT + HOUR)
        gz = await exchange.as_("gz-dc", "provider")
        owed = (await gz.get("/v1/deliveries")).json()
        assert [
            (d["symbol"], d["buyer_id"], d["quantity"], d["amount"], d["bond"]) for d in owed
        ] == [
            (GZ0, "opc", 1, 1_500, 150),
            (GZ0, "sme", 3, 4_500, 450),
            (GZ1, "sme", 4, 6_000, 600),
        ]
        for symbol, buyer, delivered in ((GZ0, "sme", 3), (GZ0, "opc", 0), (GZ1, "sme", 4)):
            body = {"symbol": symbol, "buyer_id": buyer, "delivered": delivered}
            await _post(exchange, "gz-dc", "/v1/deliveries/metering", body, "provider")
        too_much = await gz.post(
            "/v1/deliveries/metering", json={"symbol": GZ1, "buyer_id": "sme", "delivered": 5}
        )
        assert too_much.status_code == 422
        assert too_much.json()["type"] == "/problems/metering_exceeds_obligation"

        await _tick(exchange, clock, MIDNIGHT + 3 * HOUR + 1)
        settled = (await gz.get("/v1/deliveries")).json()
        assert [(d["status"], d["delivered"], d["refund"], d["penalty"]) for d in settled] == [
            ("settled", 0, 1_500, 150),
            ("settled", 3, 0, 0),
            ("settled", 4, 0, 0),
        ]

        cash = {}
        for account, role in (("gz-dc", "provider"), ("yrd-dc", "provider"), ("sme", "buyer"),
                              ("opc", "buyer")):  # fmt: skip
            client = await exchange.as_(account, role)
            cash[account] = (await client.get(f"/v1/accounts/{account}")).json()["cash"]
        # The provider: paid 10,500 for what it delivered; its bond back less 150 for the
        # undelivered card-hour. The buyer paid 12,000 and resold one card-hour for 1,700; the
        # reseller's buyer got its 1,500 escrow back and the 150 penalty.
        assert cash == {
            "gz-dc": {"available": 10_000 + 10_500 - 150, "held": 0},
            "yrd-dc": {"available": 10_000, "held": 0},
            "sme": {"available": 100_000 - 12_000 + 1_700, "held": 0},
            "opc": {"available": 5_000 - 1_700 + 1_500 + 150, "held": 0},
        }
        audit = await (await exchange.operator()).get("/v1/admin/audit")
        assert audit.json()["discrepancies"] == [], audit.text


async def _book_shows(exchange: RunningExchange, symbol: str, asks: list[list[int]]) -> bool:
    book = (await exchange.client.get(f"/v1/contracts/{symbol}/book")).json()
    return bool(book["asks"] == asks)


async def test_the_ticker_brings_a_quiet_market_to_its_gate_closure(tmp_path: Path) -> None:
    clock = LogClock(MIDNIGHT - 3 * HOUR)
    settings = settings_for(tmp_path).model_copy(update={"tick_seconds": 0.2})
    async with running_exchange(settings, clock) as exchange:
        topics = exchange.runtime.topics
        ticked = [topics.market_partition(s) for s in tick_symbols(exchange.runtime, clock.now_ms)]
        listed = {topics.market_partition(s) for s in exchange.runtime.catalogue.symbols}
        assert ticked == sorted(listed)
        deposit = {"kind": "cash", "amount": 10_000}
        await _post(exchange, "b", "/v1/accounts/b/deposits", deposit, "buyer")
        bid = {"symbol": GZ0, "side": "buy", "price": 1_000, "quantity": 2}
        await _post(exchange, "b", "/v1/orders", bid, "buyer")

        # No order and no operator: only the ticker's records carry the time past the gate.
        clock.now_ms = MIDNIGHT - HOUR

        async def expired() -> bool:
            client = await exchange.as_("b")
            orders = (await client.get("/v1/orders", params={"account_id": "b"})).json()
            last = orders[0] if orders else {}
            return (last.get("status"), last.get("reason")) == ("cancelled", "gate_closure")

        await eventually(expired, what="the bid to expire at gate closure")


async def test_two_disputes_whose_parties_join_alike_are_each_resolved_once_and_answered_alone(
    exchange_settings: Settings,
) -> None:
    """Account ids may hold `:`: what provider `dc:gz` owes buyer `lab` and what provider `dc`
    owes buyer `gz:lab` are two disputes that a `:`-joined id named alike, so the first
    resolution's outcome answered the other's caller too. Each is answered its own, and a
    second resolution of a resolved dispute is refused and moves nothing."""
    settings = exchange_settings.model_copy(
        update={"bond_bps": 1_000, "delivery_window_minutes": 60}
    )
    clock = LogClock(MIDNIGHT - 12 * HOUR)
    async with running_exchange(settings, clock) as exchange:
        for provider, buyer in (("dc:gz", "lab"), ("dc", "gz:lab")):
            for account, role in ((provider, "provider"), (buyer, "buyer")):
                deposit = {"kind": "cash", "amount": 10_000}
                await _post(exchange, account, f"/v1/accounts/{account}/deposits", deposit, role)
            hour = {
                "resource_class": "H100-80G", "region": "GZ", "quantity": 1,
                "first_day": "2027-12-01", "from_hour": 0, "to_hour": 1, "reserve_price": 1_500,
            }  # fmt: skip
            path = f"/v1/accounts/{provider}/capacity-deposits"
            await _post(exchange, provider, path, hour, "provider")
            await settle(exchange.runtime)
            await eventually(
                lambda: _book_shows(exchange, GZ0, [[1_500, 1]]), what=f"{provider}'s ask to rest"
            )
            bid = {"symbol": GZ0, "side": "buy", "price": 1_500, "quantity": 1}
            assert (await _post(exchange, buyer, "/v1/orders", bid, "buyer"))["status"] in (
                "accepted",
                "filled",
            )
            await settle(exchange.runtime)
        operator = await exchange.operator()
        await _tick(exchange, clock, MIDNIGHT)
        await _tick(exchange, clock, MIDNIGHT + HOUR)
        owed = (await operator.get("/v1/deliveries", params={"account_id": "dc"})).json()
        assert [(d["symbol"], d["buyer_id"], d["quantity"]) for d in owed] == [(GZ0, "gz:lab", 1)]
        for provider, buyer in (("dc:gz", "lab"), ("dc", "gz:lab")):
            dispute = {"symbol": GZ0, "provider_id": provider, "reason": "job never ran"}
            await _post(exchange, buyer, "/v1/deliveries/disputes", dispute, "buyer")
        await settle(exchange.runtime)

        delivered = {
            "symbol": GZ0, "provider_id": "dc:gz", "buyer_id": "lab", "delivered": 1,
            "reason": "logs show the card-hour",
        }  # fmt: skip
        too_much = {
            "symbol": GZ0, "provider_id": "dc", "buyer_id": "gz:lab", "delivered": 2,
            "reason": "more than was sold",
        }  # fmt: skip
        answers = await asyncio.gather(
            operator.post("/v1/admin/deliveries/resolve", json=delivered),
            operator.post("/v1/admin/deliveries/resolve", json=too_much),
        )
        assert [a.status_code for a in answers] == [201, 422], [a.text for a in answers]
        assert answers[1].json()["type"] == "/problems/metering_exceeds_obligation"
        assert answers[0].json()["id"] == f"{GZ0}/dc:gz/lab"
        assert answers[1].json()["request_id"] == f"{GZ0}/dc/gz:lab"

        nothing = {**too_much, "delivered": 0, "reason": "nothing ran"}
        resolved = await operator.post("/v1/admin/deliveries/resolve", json=nothing)
        assert resolved.status_code == 201, resolved.text
        again = await operator.post("/v1/admin/deliveries/resolve", json=nothing)
        assert again.status_code == 422, again.text
        assert again.json()["type"] == "/problems/no_obligation"
        await settle(exchange.runtime)

        cash = {}
        for account, role in (("dc:gz", "provider"), ("lab", "buyer"), ("dc", "provider"),
                              ("gz:lab", "buyer")):  # fmt: skip
            client = await exchange.as_(account, role)
            cash[account] = (await client.get(f"/v1/accounts/{account}")).json()["cash"]
        # dc:gz delivered: paid the 1,500 escrow, its 150 bond back. dc delivered nothing:
        # gz:lab gets the 1,500 back and dc's whole 150 bond, once.
        assert cash == {
            "dc:gz": {"available": 10_000 + 1_500, "held": 0},
            "lab": {"available": 10_000 - 1_500, "held": 0},
            "dc": {"available": 10_000 - 150, "held": 0},
            "gz:lab": {"available": 10_000 - 1_500 + 1_500 + 150, "held": 0},
        }
        audit = await operator.get("/v1/admin/audit")
        assert audit.json()["discrepancies"] == [], audit.text
