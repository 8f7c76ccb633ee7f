"""Crashes lose nothing: every stage is SIGKILLed in turn under load, then everything is checked.

Under a steady load of orders on real Kafka and PostgreSQL, risk, matching, settlement and the
API are each killed (SIGKILL, at seeded random moments) and restarted, at least 20 times in
all. Afterwards, from the event store alone: the audit finds nothing (every accepted order
rests or ended, every trade settled once on both sides, cash and capacity conserved, no hold
outlives its order, the ledger agrees with the events, every recorded checkpoint reproduces),
and each stage's final state hash equals a clean single-process replay of its input topic.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import (
    CancelOrder,
    DepositCapacity,
    DepositFunds,
    PlaceOrder,
    encode,
)
from settlement.audit import audit
from tests.conftest import fresh_database
from tests.e2e.harness import assert_stages_match_replay, eventually, free_port, settle
from tests.e2e.processes import StageProcess

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

PARTITIONS = 3
KILLS = 24
STAGES = ("risk", "matching", "settlement", "api")
ACCOUNTS = [f"acct-{n}" for n in range(8)]


async def _load(runtime: ExchangeRuntime, rng: random.Random, stop: asyncio.Event) -> int:
    """Send orders and cancels straight into the commands topic until told to stop."""
    topics = runtime.topics
    catalogue = runtime.catalogue
    producer = await runtime.log.producer()
    placed: list[tuple[str, str]] = []
    sent = 0
    try:
        while not stop.is_set():
            account = rng.choice(ACCOUNTS)
            command: PlaceOrder | CancelOrder
            if placed and rng.random() < 0.2:
                order_id, owner = placed[rng.randrange(len(placed))]
                command = CancelOrder(order_id=order_id, account_id=owner)
            else:
                symbol = rng.choice(catalogue.symbols)
                tick = catalogue.get(symbol).tick_size  # type: ignore[union-attr]
                command = PlaceOrder(
                    order_id=f"crash-{sent}",
                    account_id=account,
                    symbol=symbol,
                    side=rng.choice(["buy", "sell"]),
                    price=(100 + rng.randint(-4, 4)) * tick,
                    quantity=rng.randint(1, 5),
                )
                placed.append((command.order_id, account))
            partition = topics.command_partition(command.account_id)
            await producer.send_and_wait(topics.commands, partition, encode(command))
            sent += 1
            await asyncio.sleep(0.01)
    finally:
        await producer.close()
    return sent


async def _fund(runtime: ExchangeRuntime) -> None:
    producer = await runtime.log.producer()
    for account in ACCOUNTS:
        commands: list[DepositFunds | DepositCapacity] = [
            DepositFunds(deposit_id=f"f-{account}", account_id=account, amount=10**12)
        ]
        commands += [
            DepositCapacity(
                deposit_id=f"c-{account}-{symbol}",
                account_id=account,
                symbol=symbol,
                quantity=10**6,
            )
            for symbol in runtime.catalogue.symbols
        ]
        for command in commands:
            partition = runtime.topics.command_partition(account)
            await producer.send(runtime.topics.commands, partition, encode(command))
    await producer.close()


async def _holding(process: StageProcess) -> bool:
    """True once the current run of the process has taken partitions."""
    runs = process.output().split("now holds partitions")
    return len(runs) > process.starts and bool(process.holds())


async def test_every_stage_killed_in_turn_loses_nothing(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    rng = random.Random(20261126)
    async with fresh_database(postgres_url) as database_url:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DATABASE_URL": database_url,
            "CX_TOPIC_PREFIX": f"crash{uuid.uuid4().hex[:8]}",
            "CX_API_PORT": str(free_port()),
            "CX_COMMAND_PARTITIONS": str(PARTITIONS),
            "CX_MARKET_PARTITIONS": str(PARTITIONS),
            "CX_SNAPSHOT_EVERY": "40",
            "PYTHONUNBUFFERED": "1",
        }
        settings = Settings(
            **{k: v for k, v in env.items() if k.startswith(("CX_", "KAFKA", "DATABASE"))}
        )
        runtime = await ExchangeRuntime.open(settings)
        processes = {stage: StageProcess(stage, env, tmp_path, stage) for stage in STAGES}
        try:
            await _fund(runtime)
            stop = asyncio.Event()
            loading = asyncio.create_task(_load(runtime, rng, stop))
            kills = dict.fromkeys(STAGES, 0)
            for n in range(KILLS):
                stage = STAGES[n % len(STAGES)]
                process = processes[stage]
                if stage in {"risk", "matching"}:
                    # Kill it while it works: once the restarted process holds partitions.
                    await eventually(
                        lambda p=process: _holding(p), f"{stage} to hold partitions", 60
                    )
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                process.stop(signal.SIGKILL)
                kills[stage] += 1
                process.start()
            stop.set()
            sent = await loading
            assert all(p.alive() for p in processes.values()), {
                s: p.output()[-2000:] for s, p in processes.items() if not p.alive()
            }
            await settle(runtime, timeout_s=180)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{env['CX_API_PORT']}", timeout=10
            ) as client:

                async def api_up() -> bool:
                    try:
                        return (await client.get("/v1/contracts")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(api_up, "the restarted API", 60)
        finally:
            for process in processes.values():
                process.stop()
        assert sum(kills.values()) >= 20
        assert min(kills.values()) >= 5, kills
        assert sent > 200

        report = await audit(runtime.store, default_catalogue(), runtime.topics.market_partitions)
        assert report.discrepancies == [], [str(d) for d in report.discrepancies]
        assert report.checkpoints >= 1
        assert report.trades > 0

        # Each stage's last snapshot (taken at its final offsets on the clean stop) equals a
        # clean single-process run over the same input topic.
        await assert_stages_match_replay(runtime, PARTITIONS)
        await runtime.close()
