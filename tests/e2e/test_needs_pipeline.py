"""A need across two regions on real Kafka and PostgreSQL: it fills in the cheaper one, exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from api.models import DAY_START_MS
from api.needs import api_needs
from tests.conftest import fresh_database
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

HOUR_MS = 3_600_000
GZ = ("H100-80G.GZ.20271201T00", "H100-80G.GZ.20271201T01")
YRD = ("H100-80G.YRD.20271201T00", "H100-80G.YRD.20271201T01")
GATES = ("2027-11-30T23:00:00+08:00", "2027-12-01T00:00:00+08:00")
"""When the T00 and T01 hours' trading closes, an hour before each (China Standard Time)."""


async def _sell(
    exchange: RunningExchange, provider: str, symbols: tuple[str, ...], price: int
) -> None:
    client = await exchange.as_(provider, "provider")
    for symbol in symbols:
        capacity = {"kind": "capacity", "symbol": symbol, "quantity": 10}
        deposit = await client.post(f"/v1/accounts/{provider}/deposits", json=capacity)
        assert deposit.status_code == 201, deposit.text
        ask = {"symbol": symbol, "side": "sell", "price": price, "quantity": 5}
        assert (await client.post("/v1/orders", json=ask)).status_code == 201


async def test_a_need_across_two_regions_fills_in_the_cheaper_one_and_settles_to_the_fen(
    tmp_path: Path, kafka_bootstrap: str, postgres_url: str
) -> None:
    async with (
        fresh_database(postgres_url) as database_url,
        running_exchange(
            settings_for(tmp_path, kafka=kafka_bootstrap, database_url=database_url)
        ) as exchange,
    ):
        await _sell(exchange, "p-gz", GZ, 1900)
        await _sell(exchange, "p-yrd", YRD, 1800)
        buyer = await exchange.as_("lab")
        funds = {"kind": "cash", "amount": 50_000}
        assert (await buyer.post("/v1/accounts/lab/deposits", json=funds)).status_code == 201
        need = {
            "unit": "standard_card_hours",
            "quantity": 4,
            "hours": 2,
            "earliest_start": DAY_START_MS,
            "deadline": DAY_START_MS + 2 * HOUR_MS,
            "regions": [{"region": "GZ"}, {"region": "YRD", "adder": 10}],
            "min_grade": 10_000,
            "max_total": 8_000,
        }
        answer = await buyer.post("/v1/needs", json=need)
        assert answer.status_code == 201, answer.text
        placed = answer.json()
        assert placed["status"] == "filled"
        chosen = placed["plan"]["chosen"]
        # YRD: 7200 fen + 10 fen x 4 standard card-hours = 7240 beats GZ's 7600.
        assert (chosen["symbols"], chosen["cost"], chosen["adder_cost"]) == (list(YRD), 7200, 40)
        assert [a["ranked_total"] for a in placed["plan"]["alternatives"]] == [7240, 7600]
        assert placed["order"]["paid"] == 7200

        await settle(exchange.runtime)
        lab = (await buyer.get("/v1/accounts/lab")).json()
        assert lab["cash"] == {"available": 50_000 - 7200, "held": 0}
        assert lab["positions"] == [{"symbol": s, "quantity": 2} for s in YRD]
        seller = await exchange.as_("p-yrd", "provider")
        sold = (await seller.get("/v1/accounts/p-yrd")).json()
        # The provider is paid at delivery: until then the 7,200 waits in escrow.
        assert sold["cash"] == {"available": 0, "held": 0}
        assert sold["capacity"] == [
            {"symbol": s, "available": 5, "held": 3, "state": "open", "gate": gate}
            for s, gate in zip(YRD, GATES, strict=True)
        ]
        passed_by = await exchange.as_("p-gz", "provider")
        untouched = (await passed_by.get("/v1/accounts/p-gz")).json()
        assert untouched["capacity"] == [
            {"symbol": s, "available": 5, "held": 5, "state": "open", "gate": gate}
            for s, gate in zip(GZ, GATES, strict=True)
        ]
        async with exchange.runtime.store.engine.connect() as connection:
            stored = (
                await connection.execute(
                    select(api_needs.c.status, api_needs.c.account_id).where(
                        api_needs.c.need_id == placed["need_id"]
                    )
                )
            ).one()
        assert tuple(stored) == ("submitted", "lab")
