"""The settlement runner tells an event it cannot apply from a database that is away.

Over the in-process log and a SQLite store: an event the ledger projection refuses stops its
partition there (everything before it settled, other partitions going on) and is recorded;
it is applied once the cause is gone (the runner tries it again), or set aside by an operator
(also across a restart). A database that is busy is waited out, never recorded as a stall.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from cx.migrations import upgrade_to_head
from exchange.adapters.inprocess_log import InProcessLog
from exchange.deadletters import read_dead_letters
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import FundsDeposited, encode
from exchange.log import TopicPartition
from exchange.pipeline import Topics
from settlement import service
from settlement.projections import LedgerProjection
from settlement.service import SettlementRunner
from settlement.sql_store import SqliteEventStore
from settlement.stalled import open_stalls, set_aside, stalled_partitions
from settlement.store import StoredEvent
from tests.e2e.harness import eventually

TOPICS = Topics.named("t", 1, 2)
EVENTS = TOPICS.events


def deposit(n: int, account: str = "a") -> bytes:
    return encode(
        FundsDeposited(
            event_id=f"src:0:{n}:0",
            ts=1_000 + n,
            deposit_id=f"d{n}",
            account_id=account,
            amount=100,
            currency="CNY",
        )
    )


class Refusals:
    """Makes the ledger projection refuse the events named in `ids`, as a defect would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
        self.ids: set[str] = set()
        self.error = error
        apply = LedgerProjection.__call__
        refusals = self

        async def refusing(
            projection: LedgerProjection,
            connection: AsyncConnection,
            events: Sequence[StoredEvent],
        ) -> None:
            if refusals.ids & {e.event_id for e in events}:
                raise refusals.error
            await apply(projection, connection, events)

        monkeypatch.setattr(LedgerProjection, "__call__", refusing)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "STALL_RETRY_INITIAL_S", 0.2)
    monkeypatch.setattr(service, "STALL_CHECK_S", 0.05)
    monkeypatch.setattr(service, "RETRY_INITIAL_S", 0.01)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteEventStore]:
    opened = SqliteEventStore(tmp_path / "events.db")
    await opened.initialise(upgrade_to_head)
    yield opened
    await opened.close()


@pytest.fixture
async def log() -> AsyncIterator[InProcessLog]:
    opened = InProcessLog()
    await TOPICS.create(opened)
    yield opened
    await opened.close()


async def append(log: InProcessLog, partition: int, *values: bytes) -> list[int]:
    producer = await log.producer()
    try:
        return [(await producer.send_and_wait(EVENTS, partition, v)).offset for v in values]
    finally:
        await producer.close()


@asynccontextmanager
async def running(log: InProcessLog, store: SqliteEventStore) -> AsyncIterator[SettlementRunner]:
    runner = SettlementRunner(log, TOPICS, store, default_catalogue())
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await task


async def stored_ids(store: SqliteEventStore) -> set[str]:
    return {e.event_id for e in await store.read_all(0, 1000)}


async def test_an_event_refused_alone_stalls_its_partition_until_it_applies(
    log: InProcessLog, store: SqliteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusals = Refusals(monkeypatch, ValueError("the projection refuses it"))
    refusals.ids.add("src:0:2:0")
    await append(log, 1, deposit(1), deposit(2), deposit(3))
    await append(log, 0, deposit(4, "b"))
    async with running(log, store) as runner:

        async def stalled() -> bool:
            return bool(await open_stalls(store.engine))

        await eventually(stalled, "the partition to stall")
        (stall,) = await open_stalls(store.engine)
        assert (stall.stage, stall.topic, stall.partition, stall.offset) == (
            "settlement",
            EVENTS,
            1,
            1,
        )
        assert (stall.event_id, stall.event_type) == ("src:0:2:0", "FundsDeposited")
        assert stall.error == "ValueError: the projection refuses it"
        assert await stored_ids(store) == {"src:0:1:0", "src:0:4:0"}
        assert await store.consumer_offsets("settlement") == {(EVENTS, 0): 1, (EVENTS, 1): 1}

        async def tried_again() -> bool:
            return any(s.attempts > 1 for s in await open_stalls(store.engine))

        await eventually(tried_again, "the event to be tried again")
        assert await stored_ids(store) == {"src:0:1:0", "src:0:4:0"}

        refusals.ids.clear()  # a fixed release, a repaired database

        async def over() -> bool:
            return not await open_stalls(store.engine)

        await eventually(over, "the stall to be over")
        await runner.wait_settled({TopicPartition(EVENTS, 1): 3}, timeout_s=10)
        assert await stored_ids(store) == {f"src:0:{n}:0" for n in (1, 2, 3, 4)}
        assert runner.projection.accounts.cash["a"].available == 300
    async with store.engine.connect() as connection:
        (row,) = (await connection.execute(select(stalled_partitions))).mappings().all()
    assert (row["resolution"], row["offset"]) == ("applied", 1)


async def test_an_event_set_aside_before_a_restart_is_set_aside_on_start(
    log: InProcessLog, store: SqliteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusals = Refusals(monkeypatch, ValueError("refused"))
    refusals.ids.add("src:0:2:0")
    await append(log, 1, deposit(1), deposit(2), deposit(3))
    async with running(log, store):

        async def stalled() -> bool:
            return bool(await open_stalls(store.engine))

        await eventually(stalled, "the partition to stall")
    assert await set_aside(store.engine, f"{EVENTS}:1:0", "ops", "wrong offset") is None
    marked = await set_aside(store.engine, f"{EVENTS}:1:1", "ops", "a bad deposit")
    assert marked is not None
    assert marked.set_aside_by == "ops"
    with pytest.raises(ValueError, match="is not topic:partition:offset"):
        await set_aside(store.engine, "nonsense", "ops", "x")

    async with running(log, store) as runner:
        await runner.wait_settled({TopicPartition(EVENTS, 1): 3}, timeout_s=10)
        assert await stored_ids(store) == {"src:0:1:0", "src:0:3:0"}
        assert runner.projection.accounts.cash["a"].available == 200
    assert await open_stalls(store.engine) == []
    letters = await read_dead_letters(log, TOPICS.deadletters)
    assert [(letter.source, letter.stage, letter.value) for letter in letters] == [
        (f"{EVENTS}:1:1", "settlement", deposit(2))
    ]
    assert letters[0].reason == "set aside by ops: a bad deposit; ValueError: refused"


async def test_a_busy_database_is_waited_out_and_never_stalls(
    log: InProcessLog, store: SqliteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = OperationalError("INSERT", {}, Exception("database is locked"))
    refusals = Refusals(monkeypatch, locked)
    refusals.ids.add("src:0:2:0")
    await append(log, 1, deposit(1), deposit(2), deposit(3))
    async with running(log, store) as runner:
        await asyncio.sleep(0.5)  # many retries with backoff
        assert await open_stalls(store.engine) == []
        assert await stored_ids(store) == set()
        refusals.ids.clear()
        await runner.wait_settled({TopicPartition(EVENTS, 1): 3}, timeout_s=10)
    assert await stored_ids(store) == {"src:0:1:0", "src:0:2:0", "src:0:3:0"}
    async with store.engine.connect() as connection:
        assert (await connection.execute(select(stalled_partitions))).all() == []
