"""`cx bench e2e`: the whole pipeline on real Kafka and PostgreSQL against their raw limits.

In one run it measures
- the raw limits: aiokafka producing then consuming the same command records with no
  processing, and a bare batched insert of the same number of event rows into PostgreSQL;
- the pipeline, with risk, matching (one or more processes) and settlement each in its own
  `cx run` process: the sustained rate from submitting commands to their outcome being
  settled (readable in the event store), at saturation, and latency from submit to settled
  at a fixed offered load below it (p50/p99/p99.9 in milliseconds).
`ratio` is the saturated pipeline rate over the slower raw limit, in commands per second.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from cx.migrations import upgrade_to_head
from exchange.adapters.kafka_log import KafkaLog
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import (
    DepositCapacity,
    DepositFunds,
    PlaceOrder,
    encode,
    exchange_order_id,
)
from exchange.log import TopicPartition
from exchange.pipeline import Topics
from settlement.scratch import scratch_database
from settlement.sql_store import open_event_store

PARTITIONS = 4
ACCOUNTS = 40
ROOT = Path(__file__).resolve().parent.parent


def _orders(count: int, seed: int) -> list[PlaceOrder]:
    rng = random.Random(seed)
    catalogue = default_catalogue()
    symbols = catalogue.symbols
    ticks = {spec.symbol: spec.tick_size for spec in catalogue}
    orders = []
    for n in range(count):
        symbol = rng.choice(symbols)
        tick = ticks[symbol]
        side = rng.choice(("buy", "sell"))
        orders.append(
            PlaceOrder(
                order_id=f"b{seed}-{n}",
                account_id=f"acct-{rng.randrange(ACCOUNTS)}",
                symbol=symbol,
                side=side,
                price=(1000 + rng.randint(-8, 8)) * tick,
                quantity=rng.randint(1, 10),
            )
        )
    return orders


async def _raw_kafka(kafka: str, records: list[bytes]) -> float:
    """Records per second of producing then consuming the records, nothing else."""
    log = KafkaLog(kafka)
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    await log.create_topic(topic, PARTITIONS)
    producer = await log.producer()
    consumer = await log.consumer()
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    started = time.perf_counter()
    for n, value in enumerate(records):
        await producer.send(topic, n % PARTITIONS, value)
    await producer.flush()
    read = 0
    while read < len(records):
        read += len(await consumer.getmany(timeout_ms=500, max_records=5000))
    seconds = time.perf_counter() - started
    await log.close()
    return len(records) / seconds


async def _raw_postgres(dsn: str, rows: int) -> float:
    """Event rows per second of a bare batched insert into the events table."""
    payload = json.dumps(
        {"type": "TradeExecuted", "v": 1, "event_id": "x", "ts": 1, "symbol": "H100-80G.GZ"}
    )
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        for first in range(0, rows, 500):
            batch = [
                (f"raw-{n % 50}", n, f"raw-{n}", "TradeExecuted", 1, payload, "{}")
                for n in range(first, min(rows, first + 500))
            ]
            async with connection.transaction():
                await connection.executemany(
                    "insert into events (stream_id, stream_version, event_id, type, "
                    "schema_version, data, metadata) values ($1, $2, $3, $4, $5, $6, $7)",
                    batch,
                )
        return rows / (time.perf_counter() - started)
    finally:
        await connection.close()


class _Stages:
    """risk, matching and settlement as `cx run` processes."""

    def __init__(self, env: dict[str, str], matching_processes: int) -> None:
        stages = ["risk", *["matching"] * matching_processes, "settlement"]
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "cx.cli", "run", stage],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for stage in stages
        ]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def _settled_times(dsn: str, wanted: set[str], timeout_s: float) -> dict[str, float]:
    """Tail the event store; the wall time each wanted order's outcome became readable."""
    seen: dict[str, float] = {}
    connection = await asyncpg.connect(dsn)
    after = 0
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < len(wanted) and time.monotonic() < deadline:
            rows = await connection.fetch(
                "select position, data->>'order_id' from events where position > $1 and "
                "type in ('OrderAccepted', 'OrderRejected') order by position limit 10000",
                after,
            )
            now = time.time()
            for position, order_id in rows:
                after = position
                if order_id in wanted and order_id not in seen:
                    seen[order_id] = now
            if not rows:
                await asyncio.sleep(0.002)
    finally:
        await connection.close()
    return seen


def _exchange_id(order: PlaceOrder) -> str:
    """The id the exchange's events know an order by."""
    return exchange_order_id(order.account_id, order.order_id)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def bench_e2e(
    kafka: str, database_url: str, commands: int, rate: int, matching_processes: int = 1
) -> dict[str, Any]:
    """Measure the raw limits and the pipeline; return the figures."""
    async with scratch_database(database_url) as (url, dsn):
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        store = open_event_store(url)
        await store.initialise(upgrade_to_head)
        await store.close()
        topics = Topics.named(prefix, PARTITIONS, PARTITIONS)
        log = KafkaLog(kafka)
        await topics.create(log)

        saturation = _orders(commands, seed=1)
        steady = _orders(max(rate * 10, 100), seed=2)
        raw_kafka = await _raw_kafka(kafka, [encode(o) for o in saturation])

        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "DATABASE_URL": url,
            "CX_TOPIC_PREFIX": prefix,
            "CX_COMMAND_PARTITIONS": str(PARTITIONS),
            "CX_MARKET_PARTITIONS": str(PARTITIONS),
        }
        stages = _Stages(env, matching_processes)
        try:
            producer = await log.producer()
            funding: list[DepositFunds | DepositCapacity] = []
            for n in range(ACCOUNTS):
                account = f"acct-{n}"
                funding.append(DepositFunds(deposit_id=f"f{n}", account_id=account, amount=10**13))
                funding += [
                    DepositCapacity(
                        deposit_id=f"c{n}-{s}", account_id=account, symbol=s, quantity=10**9
                    )
                    for s in default_catalogue().symbols
                ]
            for command in funding:
                partition = topics.command_partition(command.account_id)
                await producer.send(topics.commands, partition, encode(command))
            await producer.flush()

            async def submit(orders: list[PlaceOrder], per_second: int | None) -> dict[str, float]:
                sent: dict[str, float] = {}
                started = time.perf_counter()
                for n, order in enumerate(orders):
                    if per_second is not None:
                        due = started + n / per_second
                        delay = due - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    partition = topics.command_partition(order.account_id)
                    await producer.send(topics.commands, partition, encode(order))
                    if per_second is not None:
                        await producer.flush()
                    sent[_exchange_id(order)] = time.time()
                await producer.flush()
                return sent

            # Warm up: the stages join their groups and settle the deposits.
            warm = _orders(200, seed=3)
            await submit(warm, None)
            await _settled_times(dsn, {_exchange_id(o) for o in warm}, 120)

            waiting = asyncio.create_task(
                _settled_times(dsn, {_exchange_id(o) for o in steady}, 120)
            )
            sent = await submit(steady, rate)
            settled = await waiting
            latencies = [(settled[i] - sent[i]) * 1000 for i in sent if i in settled]

            started = time.time()
            waiting = asyncio.create_task(
                _settled_times(dsn, {_exchange_id(o) for o in saturation}, 600)
            )
            await submit(saturation, None)
            done = await waiting
            saturated_seconds = max(done.values()) - started
            await producer.close()
        finally:
            stages.stop()
            await log.close()
        connection = await asyncpg.connect(dsn)
        stored = await connection.fetchval("select count(*) from events")
        await connection.close()
        events_per_command = stored / (len(funding) + len(warm) + len(steady) + commands)
        raw_postgres_events = await _raw_postgres(dsn, min(stored, 100_000))
    raw_postgres = raw_postgres_events / events_per_command
    pipeline = len(done) / saturated_seconds
    slower = min(raw_kafka, raw_postgres)
    return {
        "bench": "e2e",
        "commands": commands,
        "matching_processes": matching_processes,
        "commands_per_s": round(pipeline),
        "settled": len(done),
        "events_per_command": round(events_per_command, 2),
        "offered_per_s": rate,
        "p50_ms": round(_percentile(latencies, 0.5), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "p999_ms": round(_percentile(latencies, 0.999), 1),
        "raw_kafka_per_s": round(raw_kafka),
        "raw_postgres_events_per_s": round(raw_postgres_events),
        "raw_postgres_commands_per_s": round(raw_postgres),
        "ratio": round(pipeline / slower, 3),
    }


def run(kafka: str, database_url: str, commands: int, rate: int, matching_processes: int) -> str:
    """Run the bench and return its JSON line."""
    return json.dumps(
        asyncio.run(bench_e2e(kafka, database_url, commands, rate, matching_processes))
    )
