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
from contextlib import AsyncExitStack
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
from settlement.shards import shard_of
from settlement.sql_store import open_event_store

PARTITIONS = 4
ACCOUNTS = 40
GOAL_CPU_US_PER_COMMAND = 200
"""Issue 21's bound on the CPU a settled command costs across the exchange's processes,
PostgreSQL and Kafka."""
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


_TAIL = "cx-bench-tail"
"""The application name of the bench's own tail of the event store, not counted as the
pipeline's database work."""


async def _settled_times(dsn: str, wanted: set[str], timeout_s: float) -> dict[str, float]:
    """Tail the event store; the wall time each wanted order's outcome became readable."""
    seen: dict[str, float] = {}
    connection = await asyncpg.connect(dsn, server_settings={"application_name": _TAIL})
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
            measuring = await asyncpg.connect(dsn)
            brokers = local_listeners(kafka)
            brokers_before = {pid: _cpu_seconds(pid) for pid in brokers}
            cpu_before = [_cpu_seconds(process.pid) for process in stages.processes]
            database_before = await _pipeline_backends_cpu(measuring)
            waiting = asyncio.create_task(
                _settled_times(dsn, {_exchange_id(o) for o in saturation}, 600)
            )
            await submit(saturation, None)
            done = await waiting
            saturated_seconds = max(done.values()) - started
            cpu_used = [
                _cpu_seconds(process.pid) - before
                for process, before in zip(stages.processes, cpu_before, strict=True)
            ]
            database_after = await _pipeline_backends_cpu(measuring)
            kafka_cpu = sum(_cpu_seconds(pid) - before for pid, before in brokers_before.items())
            await measuring.close()
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
    cpu_us = {
        "risk": round(cpu_used[0] * 1e6 / len(done)),
        "matching": round(sum(cpu_used[1:-1]) * 1e6 / len(done)),
        "settlement": round(cpu_used[-1] * 1e6 / len(done)),
        "postgres": round(
            sum(t - database_before.get(pid, 0.0) for pid, t in database_after.items())
            * 1e6
            / len(done)
        ),
    }
    # The broker's CPU counts only when it runs on this machine (a remote one's is not ours
    # to read): then the total is every process a settled command costs, the load apart.
    kafka_us = round(kafka_cpu * 1e6 / len(done)) if brokers else None
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
        # Over the saturated part, divided by the commands it settled: each stage process
        # (matching's summed), the database server's processes serving the pipeline and the
        # Kafka broker (which also takes the bench's own commands in: they are the load).
        "cpu_us_per_command": {
            **cpu_us,
            "kafka": kafka_us,
            "total": None if kafka_us is None else sum(cpu_us.values()) + kafka_us,
        },
        "goal_cpu_us_per_command": GOAL_CPU_US_PER_COMMAND,
    }


def run(kafka: str, database_url: str, commands: int, rate: int, matching_processes: int) -> str:
    """Run the bench and return its JSON line."""
    return json.dumps(
        asyncio.run(bench_e2e(kafka, database_url, commands, rate, matching_processes))
    )


# Settlement in shards ---------------------------------------------------------------------

SHARD_POLL_S = 0.05


def _family_spread_orders(count: int, seed: int, topics: Topics, shards: int) -> list[PlaceOrder]:
    """Orders spread evenly over the settlement shards (each shard's families in turn), so a
    shard's share of the load is its share of the shards, whichever partitions the default
    families hash to."""
    rng = random.Random(seed)
    catalogue = default_catalogue()
    by_shard: list[list[str]] = [[] for _ in range(shards)]
    for symbol in catalogue.symbols:
        by_shard[shard_of(topics.market_partition(symbol), shards)].append(symbol)
    if not all(by_shard):
        raise ValueError(f"the default families do not reach all {shards} shards")
    ticks = {spec.symbol: spec.tick_size for spec in catalogue}
    orders = []
    for n in range(count):
        symbol = rng.choice(by_shard[n % shards])
        orders.append(
            PlaceOrder(
                order_id=f"s{seed}-{n}",
                account_id=f"acct-{rng.randrange(ACCOUNTS)}",
                symbol=symbol,
                side=rng.choice(("buy", "sell")),
                price=(1000 + rng.randint(-8, 8)) * ticks[symbol],
                quantity=rng.randint(1, 10),
            )
        )
    return orders


def _machine_busy() -> tuple[float, float]:
    """The machine's busy and total CPU seconds since boot (all cores), from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def _cx_run(arguments: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A `cx run` process of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "cx.cli", "run", *arguments],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def local_listeners(bootstrap: str) -> set[int]:
    """The processes of this machine listening on the ports `bootstrap` names (a local broker
    or cluster); empty when none is ours to see, a remote one."""
    ports = {int(address.rsplit(":", 1)[1]) for address in bootstrap.split(",") if ":" in address}
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address as HEXIP:HEXPORT, state 0A is LISTEN, the inode is field 10.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                inodes.add(f"socket:[{fields[9]}]")
    pids: set[int] = set()
    if not inodes:
        return pids
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                pids.add(int(fd_dir.parent.name))
        except OSError:
            continue
    return pids


def _cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used, from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _pipeline_backends_cpu(connection: asyncpg.Connection) -> dict[int, float]:
    """As `_backends_cpu`, without the bench's own tail of the event store."""
    rows = await connection.fetch(
        "select pid from pg_stat_activity where datname = current_database() "
        "and pid <> pg_backend_pid() and application_name <> $1",
        _TAIL,
    )
    return {row["pid"]: _cpu_seconds(row["pid"]) for row in rows}


async def _backends_cpu(connection: asyncpg.Connection) -> dict[int, float]:
    """CPU seconds of each PostgreSQL server process serving the connection's database (but
    the connection's own)."""
    rows = await connection.fetch(
        "select pid from pg_stat_activity where datname = current_database() "
        "and pid <> pg_backend_pid()"
    )
    return {row["pid"]: _cpu_seconds(row["pid"]) for row in rows}


async def _events_end(kafka: str, topics: Topics) -> dict[int, int]:
    """The events topic's end offset per partition."""
    log = KafkaLog(kafka)
    consumer = await log.consumer()
    try:
        return {
            p: await consumer.end_offset(TopicPartition(topics.events, p))
            for p in range(topics.market_partitions)
        }
    finally:
        await consumer.close()
        await log.close()


async def _settled_offsets(connections: list[asyncpg.Connection]) -> int:
    """Events settled so far: settlement's stored next offsets over the shards' databases."""
    total = 0
    for connection in connections:
        total += int(
            await connection.fetchval(
                "select coalesce(sum(next_offset), 0) from consumer_offsets "
                "where consumer = 'settlement'"
            )
        )
    return total


_Sample = tuple[float, int, list[float], dict[int, float], tuple[float, float]]
"""When, how many events settled, each settlement process's CPU, each database server
process's CPU, and the machine's busy and total CPU."""


async def _settle_shards(
    kafka: str,
    prefix: str,
    topics: Topics,
    commands: int,
    stores: list[tuple[str, str]],
    ends: dict[int, int],
) -> dict[str, Any]:
    """Settle the whole events topic into `stores` (url, dsn), one `cx run settlement
    --shard K` process each, and measure from the first settled event to the last."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "DATABASE_URL": stores[0][0],
        "CX_SETTLEMENT_SHARDS": " ".join(url for url, _ in stores[1:]),
        "CX_TOPIC_PREFIX": prefix,
        "CX_COMMAND_PARTITIONS": str(PARTITIONS),
        "CX_MARKET_PARTITIONS": str(PARTITIONS),
    }
    started: _Sample = (time.monotonic(), 0, [0.0] * len(stores), {}, _machine_busy())
    processes = [_cx_run(["settlement", "--shard", str(k)], env) for k in range(len(stores))]
    connections = [await asyncpg.connect(dsn) for _, dsn in stores]
    total = sum(ends.values())
    try:
        # Measured from the first batch stored to the last, CPU too: start-up (imports,
        # schema checks, joining the log) is the same for one shard or many. A history small
        # enough that the first reading already finds most of it settled is measured from the
        # processes' start instead: the rest would be too short for /proc's clock ticks.
        first: _Sample | None = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done = await _settled_offsets(connections)
            if first is None and 0 < done < total:
                cpu = [_cpu_seconds(process.pid) for process in processes]
                backends: dict[int, float] = {}
                for connection in connections:
                    backends |= await _backends_cpu(connection)
                first = (time.monotonic(), done, cpu, backends, _machine_busy())
            if done >= total:
                break
            await asyncio.sleep(SHARD_POLL_S)
        else:
            raise TimeoutError(f"settlement did not reach the end of {prefix}.events")
        if first is None or first[1] > total // 2:
            first = started
        begun, settled_first, cpu_first, backends_first, machine_first = first
        seconds = time.monotonic() - begun
        machine_last = _machine_busy()
        busy = (machine_last[0] - machine_first[0]) / max(machine_last[1] - machine_first[1], 1e-9)
        settlement_cpu = [
            _cpu_seconds(process.pid) - before
            for process, before in zip(processes, cpu_first, strict=True)
        ]
        backends_last: dict[int, float] = {}
        for connection in connections:
            backends_last |= await _backends_cpu(connection)
        database_cpu = sum(
            used - backends_first.get(pid, 0.0) for pid, used in backends_last.items()
        )
    finally:
        for connection in connections:
            await connection.close()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    measured = total - settled_first
    return {
        "seconds": seconds,
        "events": total,
        "measured_events": measured,
        "events_per_s": measured / seconds if seconds else 0.0,
        "settlement_cpu_s": settlement_cpu,
        "database_cpu_s": database_cpu,
        "machine_busy": busy,
    }


async def bench_shards(
    kafka: str, database_url: str, shard_servers: list[str], commands: int, most: int
) -> list[dict[str, Any]]:
    """One family-spread history (risk and matching as `cx run` processes), then settled
    from the start into 1 shard and into `most` shards (the first on `database_url`'s server,
    the others on `shard_servers`, a scratch database each): a figure per shard count."""
    if len(shard_servers) < most - 1:
        raise ValueError(
            f"--shards {most} needs {most - 1} more PostgreSQL servers in CX_SETTLEMENT_SHARDS "
            f"(a URL each; the bench makes a scratch database on each), it names "
            f"{len(shard_servers)}"
        )
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topics = Topics.named(prefix, PARTITIONS, PARTITIONS)
    orders = _family_spread_orders(commands, seed=4, topics=topics, shards=most)
    async with scratch_database(database_url) as (history_url, _):
        store = open_event_store(history_url)
        await store.initialise(upgrade_to_head)
        await store.close()
        log = KafkaLog(kafka)
        await topics.create(log)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "DATABASE_URL": history_url,
            "CX_TOPIC_PREFIX": prefix,
            "CX_COMMAND_PARTITIONS": str(PARTITIONS),
            "CX_MARKET_PARTITIONS": str(PARTITIONS),
        }
        # Risk and matching only: the events topic fills, nothing settles it yet.
        producing = [_cx_run([stage], env) for stage in ("risk", "matching")]
        try:
            producer = await log.producer()
            for n in range(ACCOUNTS):
                account = f"acct-{n}"
                funding: list[DepositFunds | DepositCapacity] = [
                    DepositFunds(deposit_id=f"f{n}", account_id=account, amount=10**13)
                ]
                funding += [
                    DepositCapacity(
                        deposit_id=f"c{n}-{s}", account_id=account, symbol=s, quantity=10**9
                    )
                    for s in default_catalogue().symbols
                ]
                for command in funding:
                    partition = topics.command_partition(command.account_id)
                    await producer.send(topics.commands, partition, encode(command))
            for order in orders:
                partition = topics.command_partition(order.account_id)
                await producer.send(topics.commands, partition, encode(order))
            await producer.flush()
            await producer.close()
            # The history is whole when every command has an outcome (each has at least
            # one event) and the events topic has stopped growing.
            sent = len(orders) + ACCOUNTS * (1 + len(default_catalogue().symbols))
            ends, still = await _events_end(kafka, topics), 0
            deadline = time.monotonic() + 900
            while still < 3 and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                now = await _events_end(kafka, topics)
                grown = now != ends or sum(now.values()) < sent
                still = 0 if grown else still + 1
                ends = now
            if still < 3:
                raise TimeoutError("risk and matching did not bring every command's outcome")
        finally:
            for process in producing:
                process.terminate()
            for process in producing:
                process.wait(timeout=30)
            await log.close()
        figures = []
        for count in sorted({1, most}):
            async with AsyncExitStack() as stack:
                stores = [await stack.enter_async_context(scratch_database(database_url))]
                for server in shard_servers[: count - 1]:
                    stores.append(await stack.enter_async_context(scratch_database(server)))
                for url, _ in stores:
                    store = open_event_store(url)
                    await store.initialise(upgrade_to_head)
                    await store.close()
                measured = await _settle_shards(kafka, prefix, topics, commands, stores, ends)
            # Commands settled in the measured window: its share of the events.
            deposits = ACCOUNTS * (1 + len(default_catalogue().symbols))
            per_event = (commands + deposits) / measured["events"]
            settled_commands = measured["measured_events"] * per_event
            cpu = sum(measured["settlement_cpu_s"]) + measured["database_cpu_s"]
            figures.append(
                {
                    "bench": "e2e-shards",
                    "shards": count,
                    "servers": count,
                    "commands": commands,
                    "events": measured["events"],
                    "seconds": round(measured["seconds"], 2),
                    "measured_events": measured["measured_events"],
                    "commands_per_s": round(measured["events_per_s"] * per_event),
                    "settled_events_per_s": round(measured["events_per_s"]),
                    "cpu_ms_per_command": round(cpu * 1000 / settled_commands, 3),
                    "settlement_cpu_ms_per_command": [
                        round(s * 1000 / settled_commands, 3) for s in measured["settlement_cpu_s"]
                    ],
                    "database_cpu_ms_per_command": round(
                        measured["database_cpu_s"] * 1000 / settled_commands, 3
                    ),
                    "cores": os.cpu_count(),
                    "machine_busy": round(measured["machine_busy"], 2),
                    # Cores settlement and its databases had on average: with the machine
                    # busy, the rest went to the Kafka broker and other work on the machine.
                    "cores_used": round(cpu / measured["seconds"], 2) if measured["seconds"] else 0,
                }
            )
    return figures


def run_shards(
    kafka: str, database_url: str, shard_servers: list[str], commands: int, most: int
) -> str:
    """Run the shards bench and return one JSON line per shard count."""
    figures = asyncio.run(bench_shards(kafka, database_url, shard_servers, commands, most))
    return "\n".join(json.dumps(figure) for figure in figures)
