"""`cx bench settle`: settlement alone, events per second and CPU per event, on PostgreSQL.

A seeded history (`make_history`) is encoded as the events topic would carry it and settled
into a fresh database by the settlement runner's own code (`SettlementRunner._settle`: decode,
append with the offsets, the ledger projection and its checkpoints) in batches of
POLL_MAX_RECORDS, as at saturation. No log is read: the records are in memory, so the figures
are settlement's and PostgreSQL's work only. CPU is counted for this process and for the
database server's processes serving the bench's database (from /proc, so the server must run
on this machine to be counted), over the settling alone. `tables_digest` is a hash of every
row settlement wrote (events without their commit time, projections, offsets, checkpoints
without theirs): two versions of the code must give the same digest for the same history.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable

import asyncpg
from sqlalchemy.engine import Connection

from exchange.adapters.inprocess_log import InProcessLog
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import encode
from exchange.log import LogRecord
from exchange.pipeline import POLL_MAX_RECORDS, Topics
from settlement.bench import HISTORY_PARTITIONS, make_history
from settlement.scratch import scratch_database
from settlement.service import SettlementRunner
from settlement.sql_store import open_event_store

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_DIGESTED = {
    "events": "SELECT position, stream_id, stream_version, event_id, type, schema_version,"
    " data::text, metadata::text FROM events ORDER BY position",
    "checkpoints": "SELECT position, state_hash FROM checkpoints ORDER BY position",
    "consumer_offsets": "SELECT * FROM consumer_offsets ORDER BY 1, 2, 3",
}
_PROJECTED = (
    "cash_balances",
    "capacity_balances",
    "positions",
    "orders",
    "journal",
    "ledger_balances",
    "deliveries",
    "delivery_recalls",
    "invoice_lines",
    "enterprises",
    "enterprise_registrations",
    "grant_applications",
    "trades",
)


def _process_cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (0 if it has gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def _server_cpu_s(admin: asyncpg.Connection, database: str) -> dict[int, float]:
    """CPU seconds so far of each server process serving `database`."""
    rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    return {row["pid"]: _process_cpu_s(row["pid"]) for row in rows}


async def _digest(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    digest = hashlib.sha256()
    try:
        queries = dict(_DIGESTED)
        for table in _PROJECTED:
            queries[table] = f"SELECT * FROM {table}"
        for table, query in queries.items():
            digest.update(table.encode())
            for row in sorted(repr(tuple(row)) for row in await connection.fetch(query)):
                digest.update(row.encode())
    finally:
        await connection.close()
    return digest.hexdigest()


async def _bench(
    database_url: str, events: int, seed: int, migrate: Callable[[Connection], None]
) -> dict[str, object]:
    history = make_history(events, seed)
    topics = Topics.named("bench", HISTORY_PARTITIONS, HISTORY_PARTITIONS)
    records = [
        LogRecord(topics.events, 0, offset, event.ts, None, encode(event))
        for offset, event in enumerate(history)
    ]
    del history
    async with scratch_database(database_url, "settle") as (url, dsn):
        store = open_event_store(url)
        await store.initialise(migrate)
        log = InProcessLog()
        await topics.create(log)
        runner = SettlementRunner(log, topics, store, default_catalogue())
        await runner.projection.load(store, runner.snapshots)
        runner._deadletters_producer = await log.producer()
        admin = await asyncpg.connect(dsn)
        database = await admin.fetchval("SELECT current_database()")
        try:
            # One batch first so the pool's connection exists and statements are prepared.
            await runner._settle(records[:POLL_MAX_RECORDS])
            server_before = await _server_cpu_s(admin, database)
            cpu_before = time.process_time()
            wall_before = time.perf_counter()
            for first in range(POLL_MAX_RECORDS, len(records), POLL_MAX_RECORDS):
                await runner._settle(records[first : first + POLL_MAX_RECORDS])
            wall = time.perf_counter() - wall_before
            cpu = time.process_time() - cpu_before
            server_after = await _server_cpu_s(admin, database)
        finally:
            await admin.close()
            await runner._deadletters.close()
            await store.close()
        server = sum(t - server_before.get(pid, 0.0) for pid, t in server_after.items())
        timed = len(records) - POLL_MAX_RECORDS
        return {
            "bench": "settle",
            "events": len(records),
            "timed_events": timed,
            "batch": POLL_MAX_RECORDS,
            "seconds": round(wall, 3),
            "events_per_s": round(timed / wall),
            "settlement_cpu_us_per_event": round(cpu / timed * 1e6, 1),
            "database_cpu_us_per_event": round(server / timed * 1e6, 1),
            "tables_digest": await _digest(dsn),
        }


def run(database_url: str, events: int, seed: int, migrate: Callable[[Connection], None]) -> str:
    """Run the bench; its JSON line (run it under the collector a node has, as `cx bench`
    does: `cx.collector.quiet_collector`)."""
    return json.dumps(asyncio.run(_bench(database_url, events, seed, migrate)))
