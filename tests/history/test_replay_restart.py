"""Replays restart from settlement's latest stored snapshot and rebuild exactly what a replay from
position 0 does; a corrupt or stale snapshot is refused, said so, and the replay starts from 0.

The history is a seeded market (the replay bench's) settled as settlement settles it: in
batches through `LedgerProjection`, which records checkpoints, with a snapshot stored whenever
one is due. Checkpoints every 250 events and snapshots every 1,000 keep it short.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from cx.migrations import upgrade_to_head
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import Event
from settlement import projections
from settlement.audit import recorded_hashes
from settlement.bench import HISTORY_PARTITIONS, make_history
from settlement.projections import SNAPSHOT_STAGE, LedgerProjection
from settlement.replay import ExchangeState, ReplayResult
from settlement.restart import replay_stored
from settlement.schema import events
from settlement.service import stream_of
from settlement.snapshots import SqlSnapshotStore, snapshots
from settlement.sql_store import SqlEventStore, open_event_store
from settlement.store import NewEvent
from tests.conftest import fresh_database
from tests.e2e.harness import settings_for
from tests.history.helpers import cx

EVENTS = 4_600
SETTLE_BATCH = 100


@pytest.fixture(scope="module")
def history() -> list[Event]:
    """The replay bench's seeded market, about EVENTS events."""
    return make_history(EVENTS, seed=3)


@pytest.fixture(params=["embedded", "postgresql"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, history: list[Event]
) -> AsyncIterator[SqlEventStore]:
    """The history settled into the embedded store or a fresh PostgreSQL database."""
    if request.param == "embedded":
        opened = open_event_store(f"sqlite+aiosqlite:///{tmp_path / 'events.sqlite3'}")
        yield await _settled(opened, history, request)
        await opened.close()
        return
    async with fresh_database(request.getfixturevalue("postgres_url")) as url:
        opened = open_event_store(url)
        yield await _settled(opened, history, request)
        await opened.close()


async def _settled(
    store: SqlEventStore, history: list[Event], request: pytest.FixtureRequest
) -> SqlEventStore:
    """Settle the history as the settlement runner does: batches through the projection, a
    snapshot stored after each batch that makes one due."""
    patch = pytest.MonkeyPatch()
    request.addfinalizer(patch.undo)
    patch.setattr(projections, "CHECKPOINT_EVERY", 250)
    patch.setattr(projections, "SNAPSHOT_EVERY", 1_000)
    await store.initialise(upgrade_to_head)
    projection = LedgerProjection(default_catalogue(), partitions=HISTORY_PARTITIONS)
    saver = SqlSnapshotStore(store.engine)
    for first in range(0, len(history), SETTLE_BATCH):
        batch = [
            NewEvent(
                event_id=event.event_id,
                stream_id=stream_of(event),
                type=event.type,  # type: ignore[attr-defined]
                data=event.model_dump(mode="json"),
            )
            for event in history[first : first + SETTLE_BATCH]
        ]
        await store.append(batch, projector=projection)
        if projection.snapshot_due:
            await saver.save(projection.snapshot())
            projection.snapshot_taken()
    patch.undo()
    return store


async def _replayed(
    store: SqlEventStore,
    until_position: int | None = None,
    until_ts: int | None = None,
    *,
    full: bool = False,
) -> ReplayResult:
    async with store.view() as view:
        recorded = await recorded_hashes(view.connection)
        if until_position is not None:
            recorded = {p: h for p, h in recorded.items() if p <= until_position}
        return await replay_stored(
            view,
            view.connection,
            default_catalogue(),
            until_position,
            until_ts,
            recorded,
            full=full,
            partitions=HISTORY_PARTITIONS,
        )


async def _snapshot_positions(store: SqlEventStore) -> list[int]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(snapshots.c.input_offset)
            .where(snapshots.c.stage == SNAPSHOT_STAGE)
            .order_by(snapshots.c.input_offset)
        )
        return [offset for (offset,) in rows]


def _same_state(restarted: ExchangeState, full: ExchangeState) -> None:
    assert restarted.state_hash() == full.state_hash()
    assert json.dumps(restarted.snapshot(), sort_keys=True) == json.dumps(
        full.snapshot(), sort_keys=True
    )


async def test_a_replay_from_the_latest_snapshot_equals_a_replay_from_position_0(
    store: SqlEventStore,
) -> None:
    positions = await _snapshot_positions(store)
    # Settlement keeps its latest three; each sits on a checkpoint of its own.
    assert len(positions) == 3
    full = await _replayed(store, full=True)
    restarted = await _replayed(store)

    assert (full.started_from, restarted.started_from) == (0, positions[-1])
    assert restarted.refused is None
    assert full.refused is None
    _same_state(restarted.state, full.state)
    assert restarted.state.applied == full.state.applied == len(await _events(store))
    # The snapshot and every checkpoint after it verified; the full replay verified them all.
    assert restarted.mismatches == []
    assert full.mismatches == []
    after = {p for p in await _recorded(store) if p >= positions[-1]}
    assert restarted.checked == len(after) >= 2
    assert full.checked == len(await _recorded(store))


async def _events(store: SqlEventStore) -> list[int]:
    async with store.engine.connect() as connection:
        return [p for (p,) in await connection.execute(select(events.c.position))]


async def _recorded(store: SqlEventStore) -> dict[int, str]:
    async with store.engine.connect() as connection:
        return await recorded_hashes(connection)


async def test_a_replay_to_an_earlier_point_starts_from_the_snapshot_at_or_before_it(
    store: SqlEventStore,
) -> None:
    positions = await _snapshot_positions(store)
    between = (positions[0] + positions[1]) // 2
    restarted = await _replayed(store, until_position=between)
    full = await _replayed(store, until_position=between, full=True)
    assert restarted.started_from == positions[0]
    assert restarted.state.position == full.state.position == between
    _same_state(restarted.state, full.state)

    # A time cut: the latest snapshot holding no event logged after it.
    until_ts = full.state.ts
    assert until_ts is not None
    timed = await _replayed(store, until_ts=until_ts)
    timed_full = await _replayed(store, until_ts=until_ts, full=True)
    assert timed.started_from == positions[0]
    _same_state(timed.state, timed_full.state)

    # Before the oldest snapshot kept, the replay starts from position 0.
    early = await _replayed(store, until_position=positions[0] - 1)
    assert early.started_from == 0
    assert early.refused is None


async def _corrupt_latest(store: SqlEventStore, **values: Any) -> int:
    """Rewrite the latest snapshot's row; its position."""
    latest = (await _snapshot_positions(store))[-1]
    async with store.engine.begin() as connection:
        await connection.execute(
            update(snapshots).where(snapshots.c.input_offset == latest).values(**values)
        )
    return latest


def _richer(data: dict[str, Any]) -> dict[str, Any]:
    """The snapshot's data with its first account's cash 1 fen more."""
    account, available, held = data["accounts"]["cash"][0]
    cash = [[account, available + 1, held], *data["accounts"]["cash"][1:]]
    return {**data, "accounts": {**data["accounts"], "cash": cash}}


async def test_a_corrupt_snapshot_is_refused_and_the_replay_starts_from_0(
    store: SqlEventStore,
) -> None:
    full = await _replayed(store, full=True)
    latest = (await _snapshot_positions(store))[-1]
    async with store.engine.connect() as connection:
        (data,) = (
            await connection.execute(
                select(snapshots.c.data).where(snapshots.c.input_offset == latest)
            )
        ).one()
    await _corrupt_latest(store, data=_richer(data))

    result = await _replayed(store)
    assert result.started_from == 0
    assert result.refused is not None
    assert f"the snapshot at position {latest} hashes to" in result.refused
    assert "it is corrupt" in result.refused
    _same_state(result.state, full.state)
    # The hashes recorded with it are untouched: the replay from 0 matches them all.
    assert result.mismatches == []


async def test_a_stale_snapshot_is_refused_by_the_checkpoint_recorded_with_it(
    store: SqlEventStore,
) -> None:
    full = await _replayed(store, full=True)
    latest = (await _snapshot_positions(store))[-1]
    async with store.engine.connect() as connection:
        (data,) = (
            await connection.execute(
                select(snapshots.c.data).where(snapshots.c.input_offset == latest)
            )
        ).one()
    stale = ExchangeState.restore(default_catalogue(), _richer(data))
    # Consistent with the hash stored with it: only the recorded checkpoint tells.
    await _corrupt_latest(store, data=stale.snapshot(), state_hash=stale.state_hash())

    result = await _replayed(store)
    assert result.started_from == 0
    assert result.refused is not None
    assert "the checkpoint recorded there" in result.refused
    assert "stale" in result.refused
    _same_state(result.state, full.state)


async def test_a_stale_snapshot_without_its_checkpoint_is_refused_by_the_next(
    store: SqlEventStore,
) -> None:
    latest = (await _snapshot_positions(store))[-1]
    async with store.engine.begin() as connection:
        await connection.execute(
            projections.checkpoints.delete().where(projections.checkpoints.c.position == latest)
        )
        (data,) = (
            await connection.execute(
                select(snapshots.c.data).where(snapshots.c.input_offset == latest)
            )
        ).one()
    stale = ExchangeState.restore(default_catalogue(), _richer(data))
    await _corrupt_latest(store, data=stale.snapshot(), state_hash=stale.state_hash())
    full = await _replayed(store, full=True)

    result = await _replayed(store)
    assert result.started_from == 0
    assert result.refused is not None
    assert f"the replay from the snapshot at position {latest} differs from" in result.refused
    _same_state(result.state, full.state)
    # From 0, only the stale snapshot's own row differs.
    assert [m.position for m in result.mismatches] == [latest]


async def test_settlement_restarts_from_its_snapshot_and_refuses_a_corrupt_one(
    store: SqlEventStore,
) -> None:
    full = await _replayed(store, full=True)
    saver = SqlSnapshotStore(store.engine)

    restarted = LedgerProjection(default_catalogue(), partitions=HISTORY_PARTITIONS)
    await restarted.load(store, saver)
    _same_state(restarted.state, full.state)
    assert restarted.accounts.journal == []

    latest = (await _snapshot_positions(store))[-1]
    async with store.engine.connect() as connection:
        (data,) = (
            await connection.execute(
                select(snapshots.c.data).where(snapshots.c.input_offset == latest)
            )
        ).one()
    await _corrupt_latest(store, data=_richer(data))
    rebuilt = LedgerProjection(default_catalogue(), partitions=HISTORY_PARTITIONS)
    await rebuilt.load(store, saver)
    _same_state(rebuilt.state, full.state)


async def test_cx_replay_says_it_refused_a_corrupt_snapshot(
    tmp_path: Path, history: list[Event], request: pytest.FixtureRequest
) -> None:
    # The history is one matching partition's, settled so (`_settled`).
    settings = settings_for(tmp_path, CX_MARKET_PARTITIONS=1)
    store = open_event_store(settings.event_store_url())
    try:
        await _settled(store, history, request)
        latest = (await _snapshot_positions(store))[-1]
        from_snapshot = cx(settings, "replay", "--json", "--verify")
        assert from_snapshot.returncode == 0, from_snapshot.stderr
        restarted = json.loads(from_snapshot.stdout)
        assert restarted["started_from"] == latest
        full = json.loads(cx(settings, "replay", "--json", "--verify", "--full").stdout)
        assert full["started_from"] == 0
        assert restarted["state_hash"] == full["state_hash"]
        assert restarted["verified"]["mismatches"] == full["verified"]["mismatches"] == []

        async with store.engine.connect() as connection:
            (data,) = (
                await connection.execute(
                    select(snapshots.c.data).where(snapshots.c.input_offset == latest)
                )
            ).one()
        await _corrupt_latest(store, data=_richer(data))
    finally:
        await store.close()
    done = cx(settings, "replay", "--json")
    assert done.returncode == 0, done.stderr
    assert "stored snapshot refused" in done.stderr
    assert f"the snapshot at position {latest} hashes to" in done.stderr
    document = json.loads(done.stdout)
    assert document["started_from"] == 0
    assert document["state_hash"] == full["state_hash"]
