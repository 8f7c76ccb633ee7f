"""An outside tester's money defect, through the API of an exchange on a test clock, embedded
and on Kafka and PostgreSQL: a holder of 2 million tokens of a bundle, 0.5 million used, offered
1 million for resale at the moment its provider reported 0.9 million more used (no whole
million left unused). Risk approved the resale before it learned of the draw-down, the resale
traded, and its buyer paid full price for a unit whose tokens were mostly used. Now matching,
which sequences both, lets whichever came first win: a draw-down first refuses the resale
(`bundle_tokens_used`, its hold released, nothing traded); a resale first refuses the report
(`bundle_offered_for_resale`). Every balance adds up to the fen and the audit is clean."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from cx.settings import Settings
from exchange.domain.messages import ControlMarket
from exchange.log import TopicPartition
from exchange.pipeline import MatchingRunner
from settlement.audit import audit, audit_ledger
from tests.e2e.harness import (
    LogClock,
    RunningExchange,
    eventually,
    running_exchange,
    settle,
)
from tests.e2e.test_resale_after_settlement import BUNDLE, CASH, DAY, END, HOUR, START
from tests.e2e.test_token_bundles import _post

pytestmark = pytest.mark.e2e


async def _cash(exchange: RunningExchange, account: str) -> dict[str, int]:
    response = await (await exchange.as_(account)).get(f"/v1/accounts/{account}")
    cash: dict[str, int] = response.json()["cash"]
    return cash


async def _tick(exchange: RunningExchange, clock: LogClock, at: int) -> None:
    clock.now_ms = at
    await exchange.runtime.submit(ControlMarket(operator_id="clock", action="tick", symbol=BUNDLE))
    await settle(exchange.runtime)


async def _audit_is_clean(exchange: RunningExchange) -> None:
    runtime = exchange.runtime
    store, catalogue, partitions = (
        runtime.store,
        runtime.catalogue,
        runtime.topics.market_partitions,
    )
    assert (await audit(store, catalogue, partitions)).discrepancies == []
    assert (await audit_ledger(store, catalogue, partitions)).discrepancies == []


@asynccontextmanager
async def _matching_waits(exchange: RunningExchange) -> AsyncIterator[Any]:
    """Matching holds back (its stage busy) while risk forwards what the block sends, so two
    requests reach matching in the order they were sent, risk having approved both on what it
    knew then (the holder's risk learns of a draw-down only once matching has made it).
    Yields `send(request)`: starts the request and returns once risk forwarded it."""
    runtime = exchange.runtime
    matching = runtime.running["matching"]
    assert isinstance(matching, MatchingRunner)
    orders = TopicPartition(runtime.topics.orders, runtime.topics.market_partition(BUNDLE))
    consumer = await runtime.log.consumer()
    sent: list[asyncio.Task[httpx.Response]] = []

    async def send(request: Awaitable[httpx.Response]) -> asyncio.Task[httpx.Response]:
        before = await consumer.end_offset(orders)

        async def forwarded() -> bool:
            return await consumer.end_offset(orders) > before

        sent.append(asyncio.ensure_future(request))
        await eventually(forwarded, "risk to forward the request to matching")
        return sent[-1]

    try:
        async with matching._busy:
            yield send
    finally:
        await consumer.close()
        await asyncio.gather(*sent)


async def _bought_and_half_used(exchange: RunningExchange, clock: LogClock) -> None:
    """Two holders buy 2 million tokens each at 5.00 元 before the period; in it, the
    provider reports 0.5 million of each used."""
    for account, role, body in (
        ("provider", "provider", {"kind": "cash", "amount": CASH}),
        ("provider", "provider", {"kind": "capacity", "symbol": BUNDLE, "quantity": 4}),
        ("holder", "buyer", {"kind": "cash", "amount": CASH}),
        ("holder-2", "buyer", {"kind": "cash", "amount": CASH}),
        ("b3", "buyer", {"kind": "cash", "amount": CASH}),
    ):
        await _post(exchange, account, role, f"/v1/accounts/{account}/deposits", body)
    ask = {"symbol": BUNDLE, "side": "sell", "price": 500, "quantity": 4}
    await _post(exchange, "provider", "provider", "/v1/orders", ask)
    for holder in ("holder", "holder-2"):
        bid = {"symbol": BUNDLE, "side": "buy", "price": 500, "quantity": 2}
        await _post(exchange, holder, "buyer", "/v1/orders", bid)
    await settle(exchange.runtime)
    await _tick(exchange, clock, START)
    clock.now_ms = START + 20 * HOUR
    for holder in ("holder", "holder-2"):
        used = {"symbol": BUNDLE, "buyer_id": holder, "tokens": 500_000, "report_id": holder}
        await _post(exchange, "provider", "provider", "/v1/deliveries/metering", used)
    await settle(exchange.runtime)


async def test_a_resale_racing_a_draw_down_of_its_unit_loses_to_whichever_came_first(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings.model_copy(
        update={
            "fees": "TOK-QWEN:0:10",
            "bond_bps": 1_000,
            "delivery_window_minutes": 60,
            "listings": "TOK-QWEN.YRD",
            "listing_days": 2,
            "term_days": 40,
        }
    )
    clock = LogClock(START - 10 * DAY)
    async with running_exchange(settings, clock) as exchange:
        await _bought_and_half_used(exchange, clock)
        provider = await exchange.as_("provider")
        resale = {"symbol": BUNDLE, "side": "sell", "price": 600, "quantity": 1}

        # The draw-down first: 0.9 million more of holder's (1.4 million used, no whole
        # million unused), then its resale of 1 million, which risk approved not knowing.
        holder = await exchange.as_("holder")
        more = {"symbol": BUNDLE, "buyer_id": "holder", "tokens": 900_000, "report_id": "m2"}
        async with _matching_waits(exchange) as send:
            metered = await send(provider.post("/v1/deliveries/metering", json=more))
            resold = await send(holder.post("/v1/orders?answer=result", json=resale))
        assert metered.result().status_code == 201, metered.result().text
        answer = resold.result()
        assert answer.status_code == 201, answer.text
        assert answer.json()["result"]["status"] == "cancelled", answer.text
        assert answer.json()["result"]["reason"] == "bundle_tokens_used", answer.text
        assert answer.json()["result"]["fills"] == []

        # The resale first: holder-2's 1 million rests, and 0.9 million more of holder-2's
        # would draw into it: refused.
        holder_2 = await exchange.as_("holder-2")
        into = {"symbol": BUNDLE, "buyer_id": "holder-2", "tokens": 900_000, "report_id": "m3"}
        async with _matching_waits(exchange) as send:
            rests = await send(holder_2.post("/v1/orders?answer=result", json=resale))
            refused = await send(provider.post("/v1/deliveries/metering", json=into))
        assert rests.result().json()["result"]["status"] == "open", rests.result().text
        assert refused.result().status_code == 422, refused.result().text
        assert refused.result().json()["type"] == "/problems/bundle_offered_for_resale"
        await settle(exchange.runtime)

        # b3 buys 2 million at 6.00 元: holder-2's unused one trades, holder's was refused.
        bid = {
            "symbol": BUNDLE, "side": "buy", "price": 600, "quantity": 2, "time_in_force": "IOC"
        }  # fmt: skip
        bought = await _post(exchange, "b3", "buyer", "/v1/orders?answer=result", bid)
        assert [(f["price"], f["quantity"]) for f in bought["result"]["fills"]] == [(600, 1)]
        await settle(exchange.runtime)
        cancelled = (await holder.get("/v1/orders", params={"status": "cancelled"})).json()
        assert [(o["quantity"], o["filled"], o["reason"]) for o in cancelled] == [
            (1, 0, "bundle_tokens_used")
        ]
        deliveries = (await provider.get("/v1/deliveries")).json()
        owed = {
            d["buyer_id"]: (d["quantity"], d["amount"], d["delivered"], d["paid"])
            for d in deliveries
            if d["buyer_id"] in ("holder", "b3")
        }
        # holder keeps its 2 million, 1.4 million of them used and 7.00 元 paid for them; b3's
        # million moved from holder-2 unused, with nothing drawn.
        assert owed == {"holder": (2, 1_000, 1_400_000, 700), "b3": (1, 500, None, None)}
        # Each holder paid 10.00 元 and a 1 fen taker fee; holder-2 was paid 6.00 元 (a maker
        # pays no fee), b3 paid it and no fee (0.6 fen, rounded down). The provider holds a
        # 0.50 元 bond a unit and was paid 7.00 元 for holder's 1.4 million tokens (10.00 x
        # 1.4 / 2) and 2.50 元 for holder-2's 0.5 million.
        assert await _cash(exchange, "holder") == {"available": CASH - 1_001, "held": 0}
        assert await _cash(exchange, "holder-2") == {"available": CASH - 1_001 + 600, "held": 0}
        assert await _cash(exchange, "b3") == {"available": CASH - 600, "held": 0}
        assert await _cash(exchange, "provider") == {
            "available": CASH - 200 + 700 + 250,
            "held": 0,
        }
        await _audit_is_clean(exchange)

        # The period ends: the unused rest is refunded (holder 3.00 元, holder-2 2.50 元, b3
        # its whole 5.00 元), the bond returned.
        await _tick(exchange, clock, END + HOUR + 1)
        assert await _cash(exchange, "holder") == {"available": CASH - 1_001 + 300, "held": 0}
        assert await _cash(exchange, "holder-2") == {
            "available": CASH - 1_001 + 600 + 250,
            "held": 0,
        }
        assert await _cash(exchange, "b3") == {"available": CASH - 600 + 500, "held": 0}
        assert await _cash(exchange, "provider") == {"available": CASH + 700 + 250, "held": 0}
        await _audit_is_clean(exchange)
