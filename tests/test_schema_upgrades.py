"""A database the previous release made and filled is migrated at start, the exchange settles
new commands on top of its history, the audits agree, and `cx projections rebuild` makes the
same projection rows from the events."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from cx.migrations import head
from cx.settings import Settings
from exchange.domain.catalogue import default_catalogue
from settlement import projections
from settlement.audit import audit, audit_ledger
from tests.conftest import fresh_database
from tests.e2e.harness import running_exchange, settings_for, settle
from tests.previous_release import (
    PREFIX,
    copy_recorded_log,
    create_previous_release,
    recorded_rows,
)

GZ0 = "H100-80G.GZ.20271201T00"


@pytest.fixture(params=["sqlite", "postgres"])
async def settings(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Settings]:
    copy_recorded_log(tmp_path)
    if request.param == "sqlite":
        yield settings_for(tmp_path, prefix=PREFIX)
        return
    async with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield settings_for(tmp_path, database_url=url, prefix=PREFIX)


async def _projection_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return {
                table.name: sorted(
                    tuple(row) for row in (await connection.execute(select(table))).all()
                )
                for table in projections.metadata.sorted_tables
            }
    finally:
        await engine.dispose()


def _rebuild(settings: Settings) -> str:
    """`cx projections rebuild` on the exchange's database, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CX_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("DATABASE_URL", None)
    env["CX_DATA_DIR"] = str(settings.data_dir)
    # The exchange's partition count: the rebuilt replica follows matching's partitions.
    env["CX_MARKET_PARTITIONS"] = str(settings.market_partitions)
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cx"), "projections", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_previous_release_s_database_upgrades_and_settles_on(
    settings: Settings,
) -> None:
    url = settings.event_store_url()
    await create_previous_release(url)
    recorded = recorded_rows()
    async with running_exchange(settings) as exchange:
        # The stall the release kept by its id alone is now its provider's.
        stalls = (await exchange.anonymous.get("/v1/stalls")).json()
        assert [(s["account_id"], s["stall_id"]) for s in stalls] == [("provider-1", "gz-night")]
        buyer = await exchange.as_("buyer-2")
        provider = await exchange.as_("provider-2", "provider")
        deposits = [
            (buyer, "buyer-2", {"kind": "cash", "amount": 100_000}),
            (provider, "provider-2", {"kind": "capacity", "symbol": GZ0, "quantity": 2}),
        ]
        for client, account, body in deposits:
            answer = await client.post(f"/v1/accounts/{account}/deposits", json=body)
            assert answer.status_code == 201, answer.text
        orders = [
            (provider, "provider-2", "sell", 1790),
            (buyer, "buyer-2", "buy", 1790),
        ]
        for client, account, side, price in orders:
            answer = await client.post(
                "/v1/orders",
                json={
                    "account_id": account,
                    "symbol": GZ0,
                    "side": side,
                    "price": price,
                    "quantity": 2,
                },
            )
            assert answer.status_code < 300, answer.text
        await settle(exchange.runtime)
        store = exchange.runtime.store
        assert (
            await audit(store, default_catalogue(), exchange.runtime.topics.market_partitions)
        ).discrepancies == []
        assert (
            await audit_ledger(
                store, default_catalogue(), exchange.runtime.topics.market_partitions
            )
        ).discrepancies == []
        async with store.engine.connect() as connection:
            trades = (await connection.execute(select(projections.trades))).mappings().all()
            version = await connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == head()
        assert len(recorded["trades"]) == 1
        assert {t["trade_id"] for t in trades} >= {recorded["trades"][0]["trade_id"]}
        assert {(t["buyer_id"], t["quantity"]) for t in trades} == {("buyer-1", 3), ("buyer-2", 2)}

    live = await _projection_rows(url)
    assert "rebuilt the projection tables from" in _rebuild(settings)
    assert await _projection_rows(url) == live
    _rebuild(settings)  # a second time changes nothing either
    assert await _projection_rows(url) == live
