"""A PostgreSQL outage mid-run: settlement waits and retries, then resumes losing nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exchange.domain.catalogue import default_catalogue
from settlement.audit import audit
from tests.e2e.harness import eventually, free_port, running_exchange, settings_for, settle
from tests.e2e.private_postgres import private_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

GZ0 = "H100-80G.GZ.20271201T00"


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
            report = await audit(exchange.runtime.store, default_catalogue())
            assert report.discrepancies == [], [str(d) for d in report.discrepancies]
            assert report.trades == 10
