"""A PostgreSQL outage mid-run: settlement waits and retries, then resumes losing nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from api.keys import revoke_key
from api.models import DAY_START_MS
from api.streams import KEY_UNCHECKED
from exchange.domain.catalogue import default_catalogue
from settlement.audit import audit
from tests.e2e.harness import eventually, free_port, running_exchange, settings_for, settle
from tests.e2e.private_postgres import private_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

GZ0 = "H100-80G.GZ.20271201T00"
GZ1 = "H100-80G.GZ.20271201T01"
STANDING_NEED = {
    "unit": "cards",
    "quantity": 2,
    "hours": 2,
    "earliest_start": DAY_START_MS,
    "deadline": DAY_START_MS + 2 * 3_600_000,
    "regions": [{"region": "GZ"}],
    "max_total": 100_000,
    "stand": True,
}
OUTAGE_BOUND_S = 4.0
"""CX_KEY_OUTAGE_SECONDS of the outage test: how long a checked key lives without the database."""


async def test_settlement_rides_out_a_database_outage(tmp_path: Path, postgres_url: str) -> None:
    # postgres_url only asserts a PostgreSQL is meant to be here; the outage is a private one.
    del postgres_url
    with private_postgres(free_port()) as cluster:
        settings = settings_for(tmp_path, database_url=cluster.url)
        async with running_exchange(settings) as exchange:
            post = exchange.client.post
            await post("/v1/accounts/b/deposits", json={"kind": "cash", "amount": 10**7})
            await post(
                "/v1/accounts/s/deposits", json={"kind": "capacity", "symbol": GZ0, "quantity": 100}
            )
            order = {
                "account_id": "s",
                "symbol": GZ0,
                "side": "sell",
                "price": 1800,
                "quantity": 50,
            }
            assert (await post("/v1/orders", json=order)).status_code == 201
            await settle(exchange.runtime)

            cluster.stop()
            # Orders still flow through the log and trade; settling them waits for the store.
            for _ in range(10):
                bid = {
                    "account_id": "b",
                    "symbol": GZ0,
                    "side": "buy",
                    "price": 1800,
                    "quantity": 2,
                }
                response = await post("/v1/orders", json=bid)
                assert response.status_code == 201, response.text
            await asyncio.sleep(3)  # several retries with backoff
            cluster.start()

            await settle(exchange.runtime, timeout_s=60)

            async def settled() -> bool:
                account = await exchange.client.get("/v1/accounts/b")
                return account.status_code == 200 and account.json()["positions"] == [
                    {"symbol": GZ0, "quantity": 20}
                ]

            await eventually(settled, "the orders placed during the outage to settle", 60)
            buyer = (await exchange.client.get("/v1/accounts/b")).json()
            assert buyer["cash"] == {"available": 10**7 - 20 * 1800, "held": 0}
            report = await audit(
                exchange.runtime.store,
                default_catalogue(),
                exchange.runtime.topics.market_partitions,
            )
            assert report.discrepancies == [], [str(d) for d in report.discrepancies]
            assert report.trades == 10


async def test_during_a_database_outage_the_api_answers_503_and_orders_still_flow(
    tmp_path: Path, postgres_url: str
) -> None:
    del postgres_url  # as above: the outage is of a private server
    with private_postgres(free_port()) as cluster:
        settings = settings_for(
            tmp_path,
            database_url=cluster.url,
            CX_KEY_CACHE_SECONDS=0.5,
            CX_KEY_OUTAGE_SECONDS=OUTAGE_BOUND_S,
        )
        async with running_exchange(settings) as exchange:
            buyer = await exchange.as_("b")
            cash = {"kind": "cash", "amount": 10**6}
            assert (await buyer.post("/v1/accounts/b/deposits", json=cash)).status_code == 201
            standing = await buyer.post("/v1/needs", json=STANDING_NEED)
            assert standing.json()["status"] == "standing", standing.text
            revoked = await exchange.as_("r")
            never_used = await exchange.key_for("n")
            engine = exchange.runtime.store.engine
            await settle(exchange.runtime)
            await asyncio.sleep(0.6)  # past the cache: the next calls check the keys afresh
            assert (await buyer.get("/v1/me")).status_code == 200
            assert (await revoked.get("/v1/me")).status_code == 200
            verified_at = asyncio.get_running_loop().time()
            # Revoked as another API process or `cx keys revoke` would: this one is not told.
            key_id = exchange.keys["r"].split("_")[1]
            assert await revoke_key(engine, key_id) is not None

            # A stream with a key of its own, open through the outage.
            url = exchange.base_url.replace("http", "ws") + "/v1/stream"
            streamer_key = await exchange.key_for("w")
            streaming = {"Authorization": f"Bearer {streamer_key}"}
            async with websockets.connect(url, additional_headers=streaming) as streamer:
                await streamer.send(json.dumps({"op": "subscribe", "channels": ["balances"]}))
                await _next(streamer, "account_snapshot")
                cluster.stop()
                orders = await buyer.get("/v1/orders")
                _assert_unavailable(orders)
                assert (await buyer.get("/v1/me")).json()["account_id"] == "b"
                bid = {"symbol": GZ0, "side": "buy", "price": 1800, "quantity": 1}
                placed = await buyer.post("/v1/orders", json=bid)
                assert placed.status_code == 201, placed.text
                # A named order needs the stored answers of earlier ones: not now.
                _assert_unavailable(
                    await buyer.post("/v1/orders", json={**bid, "client_order_id": "x"})
                )
                # A key never checked by this process cannot be checked now.
                never = {"Authorization": f"Bearer {never_used}"}
                _assert_unavailable(await exchange.anonymous.get("/v1/me", headers=never))
                with pytest.raises(websockets.exceptions.InvalidStatus):
                    async with websockets.connect(url, additional_headers=never):
                        pass
                # A key revoked elsewhere just before the outage lives at most the documented bound.
                assert (await revoked.get("/v1/me")).status_code == 200
                left = verified_at + OUTAGE_BOUND_S - asyncio.get_running_loop().time()
                await asyncio.sleep(left + 0.2)
                _assert_unavailable(await revoked.get("/v1/me"))
                _assert_unavailable(await buyer.post("/v1/orders", json=bid))
                # So does the private stream of a key that cannot be checked any more.
                told = await _next(streamer, "error")
                assert (told["code"], told["message"]) == ("unauthorized", KEY_UNCHECKED)

                cluster.start()

                async def back() -> bool:
                    return (await buyer.get("/v1/orders")).status_code == 200

                await eventually(back, "the API to read the database again", 30)
                await settle(exchange.runtime, timeout_s=60)
                listed = (await buyer.get("/v1/orders")).json()
                assert [o["order_id"] for o in listed] == [placed.json()["order_id"]]
                assert (await revoked.get("/v1/me")).status_code == 401
                assert (await exchange.anonymous.get("/v1/me", headers=never)).status_code == 200
                await streamer.send(json.dumps({"op": "auth", "key": streamer_key}))
                assert (await _next(streamer, "authenticated"))["account_id"] == "w"

                # Standing needs were kept through the outage: an offer now fills the one above
                # (and the bid placed during the outage).
                provider = await exchange.as_("p", "provider")
                for symbol in GZ0, GZ1:
                    capacity = {"kind": "capacity", "symbol": symbol, "quantity": 3}
                    deposited = await provider.post("/v1/accounts/p/deposits", json=capacity)
                    assert deposited.status_code == 201
                    ask = {"symbol": symbol, "side": "sell", "price": 1800, "quantity": 3}
                    assert (await provider.post("/v1/orders", json=ask)).status_code == 201
                need_id = standing.json()["need_id"]

                async def filled() -> bool:
                    shown = await buyer.get(f"/v1/needs/{need_id}")
                    return bool(shown.json()["status"] == "filled")

                await eventually(filled, "the standing need to fill after the outage")


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/database-unavailable"
    assert int(response.headers["retry-after"]) >= 1


async def _next(socket: Any, kind: str, timeout_s: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            message: dict[str, Any] = json.loads(await socket.recv())
            if message["type"] == kind:
                return message
