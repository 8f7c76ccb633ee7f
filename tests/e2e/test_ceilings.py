"""The exchange's ceiling through the API, on the embedded default and on Kafka and PostgreSQL.

Repeated deposits of the largest amount one request may carry are refused (422
`ceiling_exceeded`) once the money brought in through a risk partition would pass its share of
the ceiling, long before any stored balance could pass a BIGINT; settlement keeps going, the
market still trades, and both audits are clean.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from cx.settings import Settings
from exchange.domain.accounts import CEILING
from settlement.statements import yuan
from tests.e2e.harness import running_exchange, settle
from tests.history.helpers import GZ0, cx, ok, order

pytestmark = pytest.mark.e2e

MOST = 10**15
"""The largest amount one deposit may carry."""


async def _deposit(client: httpx.AsyncClient, account: str, amount: int) -> httpx.Response:
    body = {"kind": "cash", "amount": amount}
    return await client.post(f"/v1/accounts/{account}/deposits", json=body)


async def test_repeated_large_deposits_are_refused_before_the_ceiling(
    exchange_settings: Settings,
) -> None:
    async with running_exchange(exchange_settings) as exchange:
        topics = exchange.runtime.topics
        share = CEILING // topics.command_partitions
        whale = await exchange.as_("whale")
        partition = topics.command_partition("whale")
        neighbour = next(
            name
            for name in (f"n{i}" for i in range(100))
            if topics.command_partition(name) == partition
        )
        elsewhere, seller = (
            next(
                name
                for name in (f"{prefix}{i}" for i in range(100))
                if topics.command_partition(name) != partition
            )
            for prefix in ("e", "p")
        )

        accepted = share // MOST
        for start in range(0, accepted, 25):
            answers = await asyncio.gather(
                *(_deposit(whale, "whale", MOST) for _ in range(min(25, accepted - start)))
            )
            assert {a.status_code for a in answers} == {201}, answers[0].text
        refused = await _deposit(whale, "whale", MOST)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        problem = refused.json()
        assert problem["type"] == "/problems/ceiling_exceeded"
        assert (
            f"past its share of the exchange's ceiling ({yuan(share)} 元 of {yuan(CEILING)} 元"
            in (problem["detail"])
        )
        # The partition's share is its accounts' together, to the fen; another partition's
        # is its own.
        room = share - accepted * MOST
        next_door = await exchange.as_(neighbour)
        over = await _deposit(next_door, neighbour, room + 1)
        assert over.json()["type"] == "/problems/ceiling_exceeded", over.text
        await ok(_deposit(next_door, neighbour, room))
        assert (await _deposit(next_door, neighbour, 1)).status_code == 422
        await ok(_deposit(await exchange.as_(elsewhere), elsewhere, 1_000_000))
        # One order for more than the ceiling is refused for that, not for want of funds.
        too_big = await whale.post("/v1/orders", json=order("buy", MOST, 10_000))
        assert too_big.status_code == 422, too_big.text
        assert too_big.json()["type"] == "/problems/ceiling_exceeded"

        # Settlement kept going: the market still trades and settles.
        provider = await exchange.as_(seller, "provider")
        await ok(_deposit(provider, seller, 10_000))
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 5}
        await ok(provider.post(f"/v1/accounts/{seller}/deposits", json=capacity))
        await ok(provider.post("/v1/orders", json=order("sell", 1800, 5)))
        await ok(whale.post("/v1/orders", json=order("buy", 1800, 3)))
        await settle(exchange.runtime)
        account = (await whale.get("/v1/accounts/whale")).json()
        assert account["cash"] == {"available": accepted * MOST - 3 * 1800, "held": 0}
        assert account["positions"] == [{"symbol": GZ0, "quantity": 3}]
    for scope in ("all", "ledger"):
        done = cx(exchange_settings, "audit", scope, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["discrepancies"] == []
