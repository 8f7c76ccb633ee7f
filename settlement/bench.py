"""`cx bench replay`: events per second rebuilding the full state from PostgreSQL.

A seeded history is made by running the pure risk and matching stages over a generated flow
of deposits, orders and cancels (so every event is one the exchange would really store), then
loaded into a fresh database. The bench times `replay` over it, and in the same run the raw
limit of reading the same rows from the database without folding them, and a restart from a
stored snapshot of settlement's state (`replay_stored`) SNAPSHOT_EVERY / 2 events before the end
(on average, what a restart folds when settlement stores one every SNAPSHOT_EVERY events).
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
from sqlalchemy.engine import Connection

from exchange.domain.catalogue import default_catalogue
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    CancelOrder,
    DepositCapacity,
    DepositFunds,
    Event,
    EventStamp,
    OrderCancelled,
    PlaceOrder,
    TradeExecuted,
)
from exchange.domain.risk import RiskStage
from exchange.snapshots import Snapshot
from settlement.projections import SNAPSHOT_EVERY, SNAPSHOT_STAGE, SNAPSHOT_TOPIC, checkpoints
from settlement.replay import replay
from settlement.restart import replay_stored
from settlement.scratch import scratch_database
from settlement.service import stream_of
from settlement.snapshots import SqlSnapshotStore
from settlement.sql_store import SqlEventStore, open_event_store

ACCOUNTS = 200
INSERT_BATCH = 5000
HISTORY_PARTITIONS = 1
"""`make_history` runs one matching stage: its history is one matching partition's."""


def make_history(target_events: int, seed: int) -> list[Event]:
    """Events of a seeded market: deposits, then orders around a moving mid, and cancels."""
    catalogue = default_catalogue()
    symbols = catalogue.symbols
    rng = random.Random(seed)
    risk = RiskStage(catalogue)
    market = MarketStage(catalogue)
    history: list[Event] = []
    offset = 0

    def run(command: Any) -> None:
        nonlocal offset
        offset += 1
        stamp = EventStamp("bench.commands", 0, offset, 1_800_000_000_000 + offset)
        decided = risk.handle(command, stamp)
        history.append(decided)
        outcomes = market.handle(decided, EventStamp("bench.orders", 0, offset, stamp.ts))
        history.extend(outcomes)
        for outcome in outcomes:
            if isinstance(outcome, TradeExecuted | OrderCancelled):
                # The bench grants no fee concessions: folding a fill decides none.
                risk.apply_outcome(outcome, lambda _: True, stamp)

    for n in range(ACCOUNTS):
        run(DepositFunds(deposit_id=f"d{n}", account_id=f"a{n}", amount=10**12))
        for symbol in symbols:
            run(
                DepositCapacity(
                    deposit_id=f"c{n}-{symbol}", account_id=f"a{n}", symbol=symbol, quantity=10**9
                )
            )
    ticks = {spec.symbol: spec.tick_size for spec in catalogue}
    mids = {s: 1000 * ticks[s] for s in symbols}
    live: list[tuple[str, str]] = []
    n = 0
    while len(history) < target_events:
        n += 1
        account = f"a{rng.randrange(ACCOUNTS)}"
        if live and rng.random() < 0.25:
            order_id, owner = live.pop(rng.randrange(len(live)))
            run(CancelOrder(order_id=order_id, account_id=owner))
            continue
        symbol = rng.choice(symbols)
        tick = ticks[symbol]
        mids[symbol] += rng.choice((-1, 0, 1)) * tick
        side = rng.choice(("buy", "sell"))
        aggressive = rng.random() < 0.2
        offset_ticks = rng.randint(0, 10) * (-1 if aggressive else 1)
        price = (
            mids[symbol] - offset_ticks * tick
            if side == "buy"
            else mids[symbol] + offset_ticks * tick
        )
        order_id = f"o{n}"
        run(
            PlaceOrder(
                order_id=order_id,
                account_id=account,
                symbol=symbol,
                side=side,
                price=max(tick, price),
                quantity=rng.randint(1, 20),
            )
        )
        live.append((order_id, account))
    return history


async def _load(dsn: str, history: list[Event]) -> None:
    """Bulk-load the history as settlement would have stored it (stream versions and all)."""
    versions: dict[str, int] = {}
    rows = []
    for event in history:
        stream = stream_of(event)
        versions[stream] = versions.get(stream, 0) + 1
        rows.append(
            (
                stream,
                versions[stream],
                event.event_id,
                # Every concrete event has its `type` literal; Event, their base, declares none.
                event.type,  # type: ignore[attr-defined]
                1,
                orjson.dumps(event.model_dump(mode="json")).decode(),
                "{}",
            )
        )
    connection = await asyncpg.connect(dsn)
    try:
        await connection.copy_records_to_table(
            "events",
            records=rows,
            columns=[
                "stream_id",
                "stream_version",
                "event_id",
                "type",
                "schema_version",
                "data",
                "metadata",
            ],
        )
    finally:
        await connection.close()


async def _raw_read(dsn: str) -> tuple[int, float]:
    """Read every event row and decode its JSON, without folding: the database's limit."""
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        count = 0
        after = 0
        while True:
            rows = await connection.fetch(
                "select position, data::text from events where position > $1 "
                "order by position limit 5000",
                after,
            )
            if not rows:
                break
            for row in rows:
                orjson.loads(row[1])
            count += len(rows)
            after = rows[-1][0]
        return count, time.perf_counter() - started
    finally:
        await connection.close()


async def bench_replay(
    database_url: str, events: int, seed: int, migrate: Callable[[Connection], None]
) -> dict[str, Any]:
    """Make, load and replay a history in a fresh database (its schema made by `migrate`);
    return the figures."""
    async with scratch_database(database_url) as (url, dsn):
        store = open_event_store(url)
        await store.initialise(migrate)
        # Made and loaded in a call of its own, so the 200,000 events are garbage before
        # the replay is timed: a replay's process does not hold the history in memory.
        await _load(dsn, make_history(events, seed))
        gc.collect()
        raw_count, raw_seconds = await _raw_read(dsn)
        catalogue = default_catalogue()
        started, cpu_started = time.perf_counter(), time.process_time()
        result = await replay(store, catalogue, partitions=HISTORY_PARTITIONS)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        # Half a snapshot interval before the end (half the history, if it is shorter).
        end = result.state.position
        snapshot_at = end - min(SNAPSHOT_EVERY // 2, end // 2)
        await _store_snapshot(store, snapshot_at)
        started = time.perf_counter()
        async with store.view() as view:
            restarted = await replay_stored(
                view, view.connection, catalogue, partitions=HISTORY_PARTITIONS
            )
        restart_seconds = time.perf_counter() - started
        await store.close()
    state_hash = result.state.state_hash()
    if restarted.started_from != snapshot_at or restarted.state.state_hash() != state_hash:
        raise RuntimeError(
            f"the restart from the snapshot at {snapshot_at} started from "
            f"{restarted.started_from} ({restarted.refused}) and ended in another state"
        )
    replayed = result.state.applied
    per_second = replayed / seconds
    raw_per_second = raw_count / raw_seconds
    return {
        "bench": "replay",
        "events": replayed,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "events_per_s": round(per_second),
        "raw_read_events_per_s": round(raw_per_second),
        "ratio": round(per_second / raw_per_second, 3),
        "goal_events_per_s": 250_000,
        "restart_from_position": snapshot_at,
        "restart_events": result.state.position - snapshot_at,
        "restart_seconds": round(restart_seconds, 3),
        "restart_speedup": round(seconds / restart_seconds, 1),
        "state_hash": state_hash,
    }


async def _store_snapshot(store: SqlEventStore, position: int) -> None:
    """Store settlement's snapshot at `position` and its checkpoint, as settlement would."""
    state = (
        await replay(
            store, default_catalogue(), until_position=position, partitions=HISTORY_PARTITIONS
        )
    ).state
    state_hash = state.state_hash()
    await SqlSnapshotStore(store.engine).save(
        Snapshot(SNAPSHOT_STAGE, SNAPSHOT_TOPIC, 0, position, state_hash, state.snapshot())
    )
    async with store.engine.begin() as connection:
        await connection.execute(
            checkpoints.insert(), [{"position": position, "state_hash": state_hash}]
        )


def run(database_url: str, events: int, seed: int, migrate: Callable[[Connection], None]) -> str:
    """Run the bench and return its JSON line."""
    return json.dumps(asyncio.run(bench_replay(database_url, events, seed, migrate)))
