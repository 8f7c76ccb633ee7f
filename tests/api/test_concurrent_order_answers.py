"""Two requests on one order at once each get their own answer (found by the outside trial).

The API waits for an order's outcome by (account, order id); the first OrderAmended or
OrderCancelled of the order used to answer every request waiting on it, so a cancel sent beside
an amend answered `409 unexpected-outcome` although the order ended cancelled, and of two amends
sent at once both answered the first one's remaining quantity. Here both requests are waiting
when the decisions come (a log that only records what is sent; the decisions fed by hand, in
the order matching would make them), as they are on Kafka when two requests cross.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from api.keys import Principal, Role
from api.marketdata import MarketData
from api.models import AmendRequest
from api.ports import Ledger
from api.routes.orders import amend_order, cancel_order
from api.services import Commands
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import Command, OrderAmended, OrderCancelled
from exchange.pipeline import Topics
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

GZ0 = "H100-80G.GZ.20271201T00"
ORDER = "o-1"
NO_LEDGER = cast(Ledger, None)
"""These answers come from the risk stage's decisions alone: the ledger is not asked."""


class _RecordingLog:
    """Takes commands and decides nothing: the test feeds the decisions."""

    def __init__(self, expected: int) -> None:
        self.sent: list[Command] = []
        self.expected = expected
        self.all_sent = asyncio.Event()

    async def submit(self, command: Command) -> None:
        self.sent.append(command)
        if len(self.sent) == self.expected:
            self.all_sent.set()


def _waiting() -> tuple[MarketData, Commands, _RecordingLog, Principal]:
    """Market data, and a log that records the two requests' commands."""
    market = MarketData(None, Topics.named("t", 1, 1), default_catalogue())  # type: ignore[arg-type]
    log = _RecordingLog(2)
    return market, Commands(log, market), log, Principal("k", "b", Role.BUYER)  # type: ignore[arg-type]


def _decide(market: MarketData, n: int, event_type: type[Any], **fields: Any) -> None:
    market.apply(
        event_type(
            event_id=f"t.orders:0:{n}:0",
            ts=1,
            order_id=ORDER,
            account_id="b",
            symbol=GZ0,
            side="buy",
            **fields,
        ),
        0,
    )


async def test_a_cancel_sent_beside_an_amend_is_answered_by_the_cancellation() -> None:
    market, commands, log, buyer = _waiting()
    amend = asyncio.create_task(
        amend_order(ORDER, AmendRequest(quantity=5), buyer, market, commands, NO_LEDGER)
    )
    cancel = asyncio.create_task(cancel_order(ORDER, buyer, commands, NO_LEDGER))
    await log.all_sent.wait()
    _decide(market, 1, OrderAmended, price=1000, remaining=5, kept_priority=True)
    _decide(market, 2, OrderCancelled, remaining=5, reason="requested")
    amended, cancelled = await asyncio.gather(amend, cancel)
    assert (amended.status, amended.remaining) == ("amended", 5)
    assert (cancelled.status, cancelled.remaining) == ("cancelled", 5)


async def test_two_amends_at_once_are_each_answered_by_their_own_decision() -> None:
    market, commands, log, buyer = _waiting()
    to_ten = asyncio.create_task(
        amend_order(ORDER, AmendRequest(quantity=10), buyer, market, commands, NO_LEDGER)
    )
    to_seven = asyncio.create_task(
        amend_order(ORDER, AmendRequest(quantity=7), buyer, market, commands, NO_LEDGER)
    )
    await log.all_sent.wait()
    _decide(market, 1, OrderAmended, price=1000, remaining=10, kept_priority=True)
    _decide(market, 2, OrderAmended, price=1000, remaining=7, kept_priority=True)
    ten, seven = await asyncio.gather(to_ten, to_seven)
    assert (ten.remaining, seven.remaining) == (10, 7)


@pytest.fixture
async def exchange(tmp_path: Path) -> AsyncIterator[RunningExchange]:
    async with running_exchange(settings_for(tmp_path)) as running:
        yield running


@pytest.mark.e2e
async def test_an_amend_and_a_cancel_at_once_through_the_api(exchange: RunningExchange) -> None:
    buyer: httpx.AsyncClient = await exchange.as_("b")
    deposit = {"kind": "cash", "amount": 100_000, "deposit_id": "fund"}
    assert (await buyer.post("/v1/accounts/b/deposits", json=deposit)).status_code == 201
    order = {"symbol": GZ0, "side": "buy", "price": 1000, "quantity": 12, "client_order_id": "x"}
    order_id = (await buyer.post("/v1/orders", json=order)).json()["order_id"]
    amended, cancelled = await asyncio.gather(
        buyer.patch(f"/v1/orders/{order_id}", json={"quantity": 5}),
        buyer.delete(f"/v1/orders/{order_id}"),
    )
    await settle(exchange.runtime)
    assert (await buyer.get(f"/v1/orders/{order_id}")).json()["status"] == "cancelled"
    assert cancelled.status_code == 200, cancelled.text
    if amended.status_code == 200:
        assert cancelled.json()["remaining"] == amended.json()["remaining"] == 5
    else:
        assert amended.status_code == 409, amended.text
        assert cancelled.json()["remaining"] == 12
