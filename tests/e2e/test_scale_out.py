"""Scale-out: two matching processes in one consumer group on real Kafka; one dies under load.

The survivor takes over the dead process's partitions, restores them from snapshot and log,
and the exchange ends as if one process had done everything: no trade lost, none twice, and
every book's state hash equal to a single-process replay of the same input.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from api.keys import Role, create_key
from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from exchange.log import TopicPartition
from exchange.pipeline import MatchingRunner
from settlement import projections as tables
from settlement.schema import events
from settlement.snapshots import SqlSnapshotStore
from tests.conftest import fresh_database
from tests.e2e.harness import eventually, free_port, settle
from tests.e2e.processes import StageProcess

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

PARTITIONS = 4
SYMBOLS = [
    "H100-80G.GZ.20271201T00",
    "H100-80G.YRD.20271201T00",
    "A100-80G.NMG.20271201T00",
    "CPU.GZ.20271201T00",
]


@contextmanager
def processes(env: dict[str, str], log_dir: Path) -> Iterator[dict[str, StageProcess]]:
    started: dict[str, StageProcess] = {}
    try:
        for name, stage in (
            ("matching-a", "matching"),
            ("matching-b", "matching"),
            ("risk", "risk"),
            ("settlement", "settlement"),
            ("api", "api"),
        ):
            started[name] = StageProcess(stage, env, log_dir, name)
        yield started
    finally:
        for process in started.values():
            process.stop()


@asynccontextmanager
async def runtime_for(settings: Settings) -> AsyncIterator[ExchangeRuntime]:
    runtime = await ExchangeRuntime.open(settings)
    try:
        yield runtime
    finally:
        await runtime.close()


def _as(keys: dict[str, str], account: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[account]}"}


async def _trade(client: httpx.AsyncClient, keys: dict[str, str], seed: int, orders: int) -> int:
    rng = random.Random(seed)
    placed = 0
    for _ in range(orders):
        symbol = rng.choice(SYMBOLS)
        tick = 1 if symbol.startswith("CPU") else 10
        side = rng.choice(["buy", "sell"])
        account = f"{'buyer' if side == 'buy' else 'seller'}-{rng.randrange(3)}"
        response = await client.post(
            "/v1/orders",
            json={
                "account_id": account,
                "symbol": symbol,
                "side": side,
                "price": (100 + rng.randint(-4, 4)) * tick,
                "quantity": rng.randint(1, 4),
            },
            headers=_as(keys, account),
        )
        assert response.status_code in {201, 202, 422}, response.text
        placed += response.status_code != 422
    return placed


async def test_a_matching_process_dies_and_the_survivor_takes_over(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    async with fresh_database(postgres_url) as database_url:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DATABASE_URL": database_url,
            "CX_TOPIC_PREFIX": f"so{uuid.uuid4().hex[:10]}",
            "CX_API_PORT": str(free_port()),
            "CX_COMMAND_PARTITIONS": str(PARTITIONS),
            "CX_MARKET_PARTITIONS": str(PARTITIONS),
            "CX_SNAPSHOT_EVERY": "25",
            "CX_API_RATE": "1000",
            "CX_API_BURST": "1000",
            "PYTHONUNBUFFERED": "1",
        }
        settings = Settings(
            **{k: v for k, v in env.items() if k.startswith(("CX_", "KAFKA", "DATABASE"))}
        )
        async with runtime_for(settings) as runtime:
            # Topics and schema exist before the processes race to create them; so do keys.
            keys = {
                f"{account}-{n}": (
                    await create_key(
                        runtime.store.engine,
                        f"{account}-{n}",
                        Role.BUYER if account == "buyer" else Role.PROVIDER,
                    )
                ).key
                for account in ("buyer", "seller")
                for n in range(3)
            }
        with processes(env, tmp_path) as running:
            base_url = f"http://127.0.0.1:{env['CX_API_PORT']}"
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

                async def api_up() -> bool:
                    try:
                        return (await client.get("/v1/contracts")).status_code == 200
                    except httpx.TransportError:
                        return False

                async def split() -> bool:
                    a, b = running["matching-a"].holds(), running["matching-b"].holds()
                    return bool(a) and bool(b) and sorted(a + b) == list(range(PARTITIONS))

                await eventually(api_up, "the API", 60)
                await eventually(split, "the two matching processes to split the partitions", 60)
                for n in range(3):
                    for account in ("buyer", "seller"):
                        kind = {"kind": "cash", "amount": 10**8} if account == "buyer" else None
                        name = f"{account}-{n}"
                        if kind:
                            r = await client.post(
                                f"/v1/accounts/{name}/deposits", json=kind, headers=_as(keys, name)
                            )
                            assert r.status_code == 201, r.text
                        else:
                            for symbol in SYMBOLS:
                                r = await client.post(
                                    f"/v1/accounts/{name}/deposits",
                                    json={"kind": "capacity", "symbol": symbol, "quantity": 10_000},
                                    headers=_as(keys, name),
                                )
                                assert r.status_code == 201, r.text

                placed = await _trade(client, keys, seed=1, orders=80)
                victim, survivor = running["matching-a"], running["matching-b"]
                taken = victim.holds()
                loading = asyncio.create_task(_trade(client, keys, seed=2, orders=80))
                await asyncio.sleep(0.5)
                victim.stop(signal.SIGKILL)
                placed += await loading

                async def took_over() -> bool:
                    return survivor.holds() == list(range(PARTITIONS))

                await eventually(took_over, f"the survivor to take partitions {taken}", 60)
                placed += await _trade(client, keys, seed=3, orders=60)

            async with runtime_for(settings) as runtime:
                await settle(runtime, timeout_s=90)
            for name in ("api", "risk", "settlement", "matching-b"):
                running[name].stop()
            assert "Traceback" not in survivor.output(), survivor.output()

        async with runtime_for(settings) as runtime:
            await _check(runtime, placed)


async def _check(runtime: ExchangeRuntime, placed: int) -> None:
    engine = runtime.store.engine
    async with engine.connect() as connection:
        trade_ids = (await connection.execute(select(tables.trades.c.trade_id))).scalars().all()
        event_ids = (await connection.execute(select(events.c.event_id))).scalars().all()
        trade_events = (
            await connection.execute(
                select(func.count()).select_from(events).where(events.c.type == "TradeExecuted")
            )
        ).scalar_one()
        accepted = (
            await connection.execute(
                select(func.count()).select_from(events).where(events.c.type == "OrderAccepted")
            )
        ).scalar_one()
    assert trade_ids, "the market should have traded"
    assert len(trade_ids) == len(set(trade_ids)) == trade_events
    assert len(event_ids) == len(set(event_ids))
    assert accepted == placed

    # A single process replaying the orders topic from scratch ends with the same books.
    replay = MatchingRunner(runtime.log, runtime.topics, runtime.catalogue, range(PARTITIONS))
    stop = asyncio.Event()
    task = asyncio.create_task(replay.run(stop))
    await asyncio.wait_for(replay.caught_up.wait(), 60)
    stop.set()
    await task
    snapshots = SqlSnapshotStore(engine)
    consumer = await runtime.log.consumer()
    try:
        for partition in range(PARTITIONS):
            end = await consumer.end_offset(TopicPartition(runtime.topics.orders, partition))
            saved = await snapshots.latest("matching", runtime.topics.orders, partition)
            if end == 0:
                # No family of the listed contracts (nor any account) maps here.
                assert saved is None
                continue
            assert saved is not None
            assert saved.input_offset == end, (
                f"partition {partition} was not snapshotted at its end"
            )
            assert saved.state_hash == replay.partition_hash(partition), partition
    finally:
        await consumer.close()
    # The replay was silent: it wrote nothing, so the totals above still stand.
    async with engine.connect() as connection:
        assert (
            await connection.execute(select(func.count()).select_from(events))
        ).scalar_one() == len(event_ids)
