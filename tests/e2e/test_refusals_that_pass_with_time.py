"""A named request refused only because of when it came is decided again when retried: a
provider whose clock runs a few seconds fast meters before the delivery hour, is told
`no_obligation`, and its retry under the same `report_id` once the hour began is taken. Every
other answer stays the request's answer for good."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest
from sqlalchemy import update

from api.idempotency import idempotent_requests
from cx.settings import Settings
from exchange.domain.catalogue import CHINA_STANDARD_TIME, to_utc_ms
from exchange.domain.messages import ControlMarket
from tests.e2e.harness import (
    LogClock,
    RunningExchange,
    eventually,
    running_exchange,
    settle,
)

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"
HOUR = 3_600_000
MIDNIGHT = to_utc_ms(datetime(2027, 12, 1, tzinfo=CHINA_STANDARD_TIME))
METERING = "/v1/deliveries/metering"


async def _sold_hour(exchange: RunningExchange) -> None:
    """Provider `dc` sold one card-hour of GZ0 to buyer `sme`."""
    for account, role in (("dc", "provider"), ("sme", "buyer")):
        client = await exchange.as_(account, role)
        deposit = {"kind": "cash", "amount": 10_000}
        response = await client.post(f"/v1/accounts/{account}/deposits", json=deposit)
        assert response.status_code == 201, response.text
    provider = await exchange.as_("dc", "provider")
    hour = {
        "resource_class": "H100-80G", "region": "GZ", "quantity": 1, "first_day": "2027-12-01",
        "from_hour": 0, "to_hour": 1, "reserve_price": 1_500,
    }  # fmt: skip
    response = await provider.post("/v1/accounts/dc/capacity-deposits", json=hour)
    assert response.status_code == 201, response.text
    await settle(exchange.runtime)

    async def rests() -> bool:
        book = (await exchange.client.get(f"/v1/contracts/{GZ0}/book")).json()
        return bool(book["asks"])

    await eventually(rests, what="the ask to rest")
    buyer = await exchange.as_("sme")
    bid = {"symbol": GZ0, "side": "buy", "price": 1_500, "quantity": 1}
    assert (await buyer.post("/v1/orders", json=bid)).status_code == 201
    await settle(exchange.runtime)


async def _tick(exchange: RunningExchange, clock: LogClock, at: int) -> None:
    clock.now_ms = at
    await exchange.runtime.submit(ControlMarket(operator_id="clock", action="tick", symbol=GZ0))
    await settle(exchange.runtime)


async def test_metering_refused_before_the_hour_is_taken_when_retried_within_it(
    exchange_settings: Settings,
) -> None:
    clock = LogClock(MIDNIGHT - 12 * HOUR)
    async with running_exchange(exchange_settings, clock) as exchange:
        await _sold_hour(exchange)
        provider = await exchange.as_("dc", "provider")
        report = {"symbol": GZ0, "buyer_id": "sme", "delivered": 1, "report_id": "early-1"}

        early = await provider.post(METERING, json=report)
        assert early.status_code == 422, early.text
        assert early.json()["type"] == "/problems/no_obligation"
        # The name stays this request's: another body under it is refused, before and after.
        changed = await provider.post(METERING, json={**report, "delivered": 0})
        assert changed.json()["type"] == "/problems/idempotency-key-reused"
        # As an earlier version of the API kept it: as the request's final answer.
        async with exchange.runtime.store.engine.begin() as connection:
            await connection.execute(
                update(idempotent_requests)
                .where(idempotent_requests.c.account_id == "dc")
                .values(status_code=422, body=orjson.dumps(early.json()).decode())
            )

        await _tick(exchange, clock, MIDNIGHT + HOUR)
        retried = await provider.post(METERING, json=report)
        assert retried.status_code == 201, retried.text
        assert retried.json()["status"] == "done"
        assert "idempotent-replayed" not in retried.headers
        again = await provider.post(METERING, json=report)
        assert again.status_code == 201
        assert again.json() == retried.json()
        assert again.headers["idempotent-replayed"] == "true"
        changed = await provider.post(METERING, json={**report, "delivered": 0})
        assert changed.json()["type"] == "/problems/idempotency-key-reused"

        # A refusal the passing of time does not lift stays the request's answer.
        too_much = {**report, "report_id": "too-much", "delivered": 2}
        first = await provider.post(METERING, json=too_much)
        assert first.status_code == 422, first.text
        assert first.json()["type"] == "/problems/metering_exceeds_obligation"
        kept = await provider.post(METERING, json=too_much)
        assert kept.json() == first.json()
        assert kept.headers["idempotent-replayed"] == "true"

        await settle(exchange.runtime)
        delivered = (await provider.get("/v1/deliveries")).json()
        assert [(d["symbol"], d["buyer_id"], d["delivered"]) for d in delivered] == [
            (GZ0, "sme", 1)
        ]
