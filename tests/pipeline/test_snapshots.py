"""Snapshots: full replay, snapshot + tail and the live stage agree on the state hash."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from cx.migrations import upgrade_to_head
from exchange.adapters.inprocess_log import InProcessLog
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    Catalogue,
    ListingRule,
    MarketRules,
    default_catalogue,
    to_utc_ms,
)
from exchange.domain.messages import DepositCapacity, DepositFunds, PlaceOrder, encode
from exchange.log import CommandLog, TopicPartition
from exchange.pipeline import MatchingRunner, RiskRunner, StageRunner, Topics
from exchange.snapshots import Snapshot, SnapshotStore, SnapshotStoreUnavailable
from settlement.snapshots import SqlSnapshotStore
from settlement.snapshots import snapshots as snapshot_table
from settlement.sql_store import SqlEventStore, open_event_store
from tests.conftest import fresh_database

CATALOGUE = default_catalogue()
SYMBOLS = CATALOGUE.symbols


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlEventStore]:
    if request.param == "sqlite":
        opened = open_event_store(f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}")
        await opened.initialise(upgrade_to_head)
        yield opened
        await opened.close()
        return
    async with fresh_database(request.getfixturevalue("postgres_url")) as url:
        opened = open_event_store(url)
        await opened.initialise(upgrade_to_head)
        yield opened
        await opened.close()


async def _send_commands(
    log: CommandLog,
    topics: Topics,
    count: int,
    seed: int,
    catalogue: Catalogue = CATALOGUE,
    symbols: list[str] = SYMBOLS,
) -> None:
    rng = random.Random(seed)
    producer = await log.producer()
    accounts = [f"acct-{n}" for n in range(6)]
    for account in accounts:
        commands = [
            DepositFunds(deposit_id=f"cash-{account}-{seed}", account_id=account, amount=10**9)
        ]
        commands += [
            DepositCapacity(
                deposit_id=f"cap-{account}-{symbol}-{seed}",
                account_id=account,
                symbol=symbol,
                quantity=500,
            )
            for symbol in symbols
        ]
        for command in commands:
            await producer.send(topics.commands, topics.command_partition(account), encode(command))
    for n in range(count):
        account = rng.choice(accounts)
        symbol = rng.choice(symbols)
        tick = catalogue.get(symbol).tick_size  # type: ignore[union-attr]
        order = PlaceOrder(
            order_id=f"o-{seed}-{n}",
            account_id=account,
            symbol=symbol,
            side=rng.choice(["buy", "sell"]),
            price=(100 + rng.randint(-5, 5)) * tick,
            quantity=rng.randint(1, 5),
        )
        await producer.send(topics.commands, topics.command_partition(account), encode(order))
    await producer.close()


async def _drained(
    log: CommandLog, runner: StageRunner[object], topic: str, partitions: int
) -> None:
    """Wait until the runner's group has committed everything in its topic."""
    consumer = await log.consumer(group_id=runner.group_id)
    try:
        async with asyncio.timeout(60):
            while True:
                done = True
                for partition in range(partitions):
                    tp = TopicPartition(topic, partition)
                    if (await consumer.committed(tp) or 0) < await consumer.end_offset(tp):
                        done = False
                if done:
                    return
                await asyncio.sleep(0.05)
    finally:
        await consumer.close()


async def _run_until_drained(
    log: CommandLog,
    topics: Topics,
    snapshots: SnapshotStore | None,
    every: int,
    catalogue: Catalogue = CATALOGUE,
) -> tuple[RiskRunner, MatchingRunner, asyncio.Event, list[asyncio.Task[None]]]:
    risk = RiskRunner(log, topics, catalogue, None, snapshots, every)
    matching = MatchingRunner(log, topics, catalogue, None, snapshots, every)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(risk.run(stop)), asyncio.create_task(matching.run(stop))]
    for _ in range(3):  # fills feed back into commands: drain until nothing moves
        await _drained(log, risk, topics.commands, topics.command_partitions)  # type: ignore[arg-type]
        await _drained(log, matching, topics.orders, topics.market_partitions)  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
    return risk, matching, stop, tasks


async def test_full_replay_snapshot_plus_tail_and_the_live_stage_agree(
    store: SqlEventStore,
) -> None:
    log = InProcessLog()
    topics = Topics.named("snap", 3, 3)
    await topics.create(log)
    snapshots = SqlSnapshotStore(store.engine)
    await _send_commands(log, topics, 400, seed=1)

    live_risk, live_matching, _, live_tasks = await _run_until_drained(log, topics, snapshots, 37)
    # A second, smaller wave: fewer records per partition than trigger a snapshot.
    await _send_commands(log, topics, 12, seed=3)
    for _ in range(3):
        await _drained(log, live_risk, topics.commands, topics.command_partitions)  # type: ignore[arg-type]
        await _drained(log, live_matching, topics.orders, topics.market_partitions)  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
    live = (live_risk.state_hash(), live_matching.state_hash())
    assert sum(len(i.stage.accounts.open_orders) for i in live_risk.instances.values()) > 0
    # A crash: the tasks die without the snapshot a clean stop takes.
    for task in live_tasks:
        task.cancel()
    await asyncio.gather(*live_tasks, return_exceptions=True)

    restored_risk, restored_matching, stop, tasks = await _run_until_drained(
        log, topics, snapshots, 37
    )
    # Restored from a snapshot short of the end: the tail was replayed on top of it.
    for runner, topic in ((restored_risk, topics.commands), (restored_matching, topics.orders)):
        consumer = await log.consumer()
        ends = [await consumer.end_offset(TopicPartition(topic, p)) for p in range(3)]
        await consumer.close()
        assert any(0 < runner.restored_from[p] < ends[p] for p in range(3)), runner.restored_from
    restored = (restored_risk.state_hash(), restored_matching.state_hash())
    stop.set()
    await asyncio.gather(*tasks)

    replayed_risk, replayed_matching, stop, tasks = await _run_until_drained(log, topics, None, 37)
    assert all(offset == 0 for offset in replayed_risk.restored_from.values())
    replayed = (replayed_risk.state_hash(), replayed_matching.state_hash())
    stop.set()
    await asyncio.gather(*tasks)
    await log.close()

    assert live == restored == replayed


async def test_a_snapshot_that_does_not_match_its_hash_is_ignored(store: SqlEventStore) -> None:
    log = InProcessLog()
    topics = Topics.named("bad", 2, 2)
    await topics.create(log)
    snapshots = SqlSnapshotStore(store.engine)
    await _send_commands(log, topics, 60, seed=2)
    risk, _, stop, tasks = await _run_until_drained(log, topics, snapshots, 5)
    expected = risk.state_hash()
    stop.set()
    await asyncio.gather(*tasks)
    for partition in range(2):
        saved = await snapshots.latest("risk", topics.commands, partition)
        assert saved is not None
        tampered = {**saved.data, "stage": {**saved.data["stage"], "order_ids": []}}
        async with store.engine.begin() as connection:
            await connection.execute(
                update(snapshot_table)
                .where(
                    snapshot_table.c.stage == "risk",
                    snapshot_table.c.partition == partition,
                    snapshot_table.c.input_offset == saved.input_offset,
                )
                .values(data=tampered)
            )

    again, _, stop, tasks = await _run_until_drained(log, topics, snapshots, 10**9)
    assert again.restored_from == {0: 0, 1: 0}
    assert again.state_hash() == expected
    stop.set()
    await asyncio.gather(*tasks)
    await log.close()


async def test_lazily_listed_books_survive_snapshots_and_match_a_replay(
    store: SqlEventStore,
) -> None:
    # Rolled families on a log clock that runs a minute per record, so that over the run
    # hours are listed, trade, close at their gate and are delivered and dropped.
    start = to_utc_ms(datetime(2026, 11, 26, 18, tzinfo=CHINA_STANDARD_TIME))
    ticks = itertools.count()
    log = InProcessLog(clock_ms=lambda: start + 60_000 * next(ticks))
    rolling = default_catalogue(
        MarketRules(), [ListingRule(("H100-80G-INT.GZ", "TOK-QWEN.YRD", "CPU.NX"), 1)]
    )
    symbols = [s.symbol for s in rolling.rolled_at(start) if s.delivery_start.hour in (8, 20)]
    topics = Topics.named("roll", 3, 3)
    await topics.create(log)
    snapshots = SqlSnapshotStore(store.engine)
    await _send_commands(log, topics, 300, 5, rolling, symbols)

    live_risk, live_matching, _, live_tasks = await _run_until_drained(
        log, topics, snapshots, 23, rolling
    )
    live = (live_risk.state_hash(), live_matching.state_hash())
    books = {s for i in live_matching.instances.values() for s in i.stage.books}
    assert set(symbols) & books, "rolled books were listed"
    assert not any(s.endswith("20261126T20") for s in books), "delivered books were dropped"
    for task in live_tasks:
        task.cancel()
    await asyncio.gather(*live_tasks, return_exceptions=True)

    restored_risk, restored_matching, stop, tasks = await _run_until_drained(
        log, topics, snapshots, 23, rolling
    )
    assert any(offset > 0 for offset in restored_matching.restored_from.values())
    restored = (restored_risk.state_hash(), restored_matching.state_hash())
    stop.set()
    await asyncio.gather(*tasks)

    replayed_risk, replayed_matching, stop, tasks = await _run_until_drained(
        log, topics, None, 23, rolling
    )
    replayed = (replayed_risk.state_hash(), replayed_matching.state_hash())
    stop.set()
    await asyncio.gather(*tasks)
    await log.close()

    assert live == restored == replayed


class _FailingOver(SnapshotStore):
    """A store whose database is away for its first `refusals` saves (a primary lost, its
    standby not promoted yet), then the store it wraps."""

    def __init__(self, store: SnapshotStore, refusals: int) -> None:
        self.store = store
        self.refusals = refusals
        self.refused = 0

    async def save(self, snapshot: Snapshot) -> None:
        if self.refused < self.refusals:
            self.refused += 1
            raise SnapshotStoreUnavailable("the primary is gone")
        await self.store.save(snapshot)

    async def latest(
        self, stage: str, topic: str, partition: int, at_most: int | None = None
    ) -> Snapshot | None:
        return await self.store.latest(stage, topic, partition, at_most)


async def test_the_stages_go_on_while_snapshots_cannot_be_saved(tmp_path: Path) -> None:
    store = open_event_store(f"sqlite+aiosqlite:///{tmp_path / 'store.sqlite3'}")
    await store.initialise(upgrade_to_head)
    log = InProcessLog()
    topics = Topics.named("away", 3, 3)
    await topics.create(log)
    snapshots = _FailingOver(SqlSnapshotStore(store.engine), refusals=4)
    await _send_commands(log, topics, 400, seed=4)

    risk, matching, stop, tasks = await _run_until_drained(log, topics, snapshots, 37)
    assert snapshots.refused == 4
    assert not any(task.done() for task in tasks)
    live = (risk.state_hash(), matching.state_hash())
    stop.set()
    await asyncio.gather(*tasks)
    # Saved once the store was back, at the partitions' final offsets on the clean stop.
    for runner in (risk, matching):
        for partition in range(3):
            saved = await snapshots.latest(runner.name, runner.input_topic, partition)
            assert saved is not None
            assert saved.state_hash == runner.partition_hash(partition)

    replayed_risk, replayed_matching, stop, tasks = await _run_until_drained(log, topics, None, 37)
    assert (replayed_risk.state_hash(), replayed_matching.state_hash()) == live
    stop.set()
    await asyncio.gather(*tasks)
    await log.close()
    await store.close()
