"""The operator's API gives its times in China Standard Time (+08:00), as everything else a
person reads: the pipeline's status, keys, and stored events, from either store (SQLite reads
its UTC times back without a zone, PostgreSQL with one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import fresh_database
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GZ0 = "H100-80G.GZ.20271201T00"


@pytest.fixture(params=["embedded", "kafka+postgres"])
async def exchange(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[RunningExchange]:
    if request.param == "embedded":
        async with running_exchange(settings_for(tmp_path)) as running:
            yield running
        return
    kafka = request.getfixturevalue("kafka_bootstrap")
    async with fresh_database(request.getfixturevalue("postgres_url")) as database_url:
        settings = settings_for(tmp_path, kafka=kafka, database_url=database_url)
        async with running_exchange(settings) as running:
            yield running


def _in_cst_and_recent(shown: str, started: datetime) -> None:
    assert shown.endswith("+08:00"), shown
    moment = datetime.fromisoformat(shown)
    assert started - timedelta(seconds=5) <= moment <= datetime.now(UTC) + timedelta(seconds=5)


async def test_status_keys_and_stored_events_are_shown_in_china_standard_time(
    exchange: RunningExchange,
) -> None:
    started = datetime.now(UTC)
    provider = await exchange.as_("provider-p", "provider")
    capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 10}
    assert (
        await provider.post("/v1/accounts/provider-p/deposits", json=capacity)
    ).status_code == 201
    await settle(exchange.runtime)
    operator = await exchange.operator()

    status = (await operator.get("/v1/admin/status")).json()
    _in_cst_and_recent(status["checked_at"], started)

    keys = (await operator.get("/v1/admin/keys")).json()
    assert keys
    for key in keys:
        _in_cst_and_recent(key["created_at"], started)

    stored = (await operator.get(f"/v1/admin/streams/contract-{GZ0}")).json()
    assert [e["type"] for e in stored] == ["CapacityDeposited"]
    _in_cst_and_recent(stored[0]["recorded_at"], started)
