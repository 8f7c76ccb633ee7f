"""A replay of every settlement shard's history merged restarts from the merged state at each
shard's latest stored snapshot, reads only the events after them, and ends where a replay of
every shard from position 0 does (the same `history_hash`); a refused snapshot sends it back
to position 0, saying why.

The history is the replay bench's seeded market split as settlement splits it (a contract's
events by its family's partition, deposits by the account's; partition P in shard P mod 2),
each shard settled as settlement settles it: in batches through `LedgerProjection`, with a
snapshot stored whenever one is due.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from api.app import create_app
from api.keys import Role, create_key
from api.marketdata import MarketData
from cx.migrations import upgrade_to_head
from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    Catalogue,
    default_catalogue,
    family_of,
)
from exchange.domain.messages import (
    BundleDrawn,
    DepositCapacity,
    Event,
    PlaceOrder,
)
from exchange.pipeline import partition_for
from settlement import projections
from settlement.bench import make_history
from settlement.projections import SNAPSHOT_STAGE, LedgerProjection
from settlement.replay import ExchangeState
from settlement.restart import replay_merged_stored
from settlement.service import stream_of
from settlement.shard_states import NotCombinable, combine
from settlement.shards import shard_of, viewing
from settlement.snapshots import SqlSnapshotStore, snapshots
from settlement.sql_store import SqlEventStore, open_event_store
from settlement.store import NewEvent
from tests.conftest import fresh_database
from tests.e2e.harness import settings_for
from tests.history.helpers import ROOT
from tests.test_bank import funds
from tests.test_token_bundles import (
    BUNDLE,
    DAY,
    LISTING,
    RULES,
    START,
    bundle_bank,
    buy,
    meter,
    sell,
    tick,
)

EVENTS = 4_600
SETTLE_BATCH = 100
PARTITIONS = 3
"""`settings_for`'s CX_MARKET_PARTITIONS."""
GZ = "H100-80G.GZ.20271201T00"


def _partition(event: Event) -> int:
    """The events-topic partition matching wrote `event` to."""
    data = event.model_dump(mode="json")
    symbol = data.get("symbol")
    if data["type"].endswith("Deposited") or symbol is None:
        return partition_for(data["account_id"], PARTITIONS)
    return partition_for(family_of(symbol), PARTITIONS)


def _shard(event: Event) -> int:
    return shard_of(_partition(event), 2)


@pytest.fixture
async def sharded(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Settings]:
    """The history settled into two shards, two databases on the test's PostgreSQL server."""
    history = make_history(EVENTS, seed=5)
    parts: list[list[Event]] = [[], []]
    for event in history:
        parts[_shard(event)].append(event)
    assert all(len(part) > 2_000 for part in parts), [len(part) for part in parts]
    async with (
        fresh_database(postgres_url) as home_url,
        fresh_database(postgres_url) as other_url,
    ):
        with monkeypatch.context() as patch:
            patch.setattr(projections, "CHECKPOINT_EVERY", 250)
            patch.setattr(projections, "SNAPSHOT_EVERY", 1_000)
            for url, part in zip((home_url, other_url), parts, strict=True):
                store = open_event_store(url)
                try:
                    await _settle(store, part)
                finally:
                    await store.close()
        yield settings_for(tmp_path, database_url=home_url, CX_SETTLEMENT_SHARDS=other_url)


async def _settle(
    store: SqlEventStore,
    part: list[Event],
    catalogue: Catalogue | None = None,
    batch_size: int = SETTLE_BATCH,
) -> None:
    await store.initialise(upgrade_to_head)
    projection = LedgerProjection(catalogue or default_catalogue(), partitions=PARTITIONS)
    saver = SqlSnapshotStore(store.engine)
    for first in range(0, len(part), batch_size):
        batch = [
            NewEvent(
                event_id=event.event_id,
                stream_id=stream_of(event),
                type=event.type,  # type: ignore[attr-defined]
                data=event.model_dump(mode="json"),
                # Where settlement read it, as `settlement.service` records it.
                metadata={"partition": _partition(event)},
            )
            for event in part[first : first + batch_size]
        ]
        await store.append(batch, projector=projection)
        if projection.snapshot_due:
            await saver.save(projection.snapshot())
            projection.snapshot_taken()


def _cx_replay(settings: Settings, *args: str) -> tuple[dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env |= {
        "CX_DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": str(settings.database_url),
        "CX_SETTLEMENT_SHARDS": settings.settlement_shards,
        "CX_MARKET_PARTITIONS": str(PARTITIONS),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cx.cli", "replay", "--json", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document, done.stderr


async def _latest_snapshots(settings: Settings) -> list[int]:
    latest = []
    for url in settings.shard_urls():
        store = open_event_store(url)
        try:
            async with store.engine.connect() as connection:
                offsets = await connection.execute(
                    select(snapshots.c.input_offset).where(snapshots.c.stage == SNAPSHOT_STAGE)
                )
                latest.append(max(offset for (offset,) in offsets))
        finally:
            await store.close()
    return latest


async def test_a_merged_replay_restarts_from_the_shards_snapshots(sharded: Settings) -> None:
    full, _ = _cx_replay(sharded, "--full")
    assert full["shard_snapshots"] is None
    assert full["events_read"] == full["events"] == full["position"]
    restarted, _ = _cx_replay(sharded)
    latest = await _latest_snapshots(sharded)
    assert all(position >= 1_000 for position in latest), latest
    assert restarted["shard_snapshots"] == latest
    # Only what comes after each shard's snapshot is read...
    assert restarted["events_read"] == full["events"] - sum(latest)
    assert restarted["events_read"] < full["events"] // 2
    # ... and the state it ends in is the full replay's.
    assert restarted["history_hash"] == full["history_hash"]
    assert restarted["events"] == full["events"]
    assert restarted["position"] == full["position"]
    assert restarted["ts"] == full["ts"]
    assert restarted["accounts"] == full["accounts"]
    assert restarted["books"] == full["books"]
    # A time cut restarts from each shard's snapshot logged by then, and ends where a full
    # replay to the same cut does.
    cut = datetime.fromtimestamp((full["ts"] - 300) / 1000, CHINA_STANDARD_TIME).isoformat()
    full_cut, _ = _cx_replay(sharded, "--full", "--until", cut)
    restarted_cut, _ = _cx_replay(sharded, "--until", cut)
    assert full_cut["history_hash"] != full["history_hash"]
    # Shard 0's latest holds events logged after the cut: the one before it is taken.
    assert restarted_cut["shard_snapshots"] == [latest[0] - 1_000, latest[1]]
    assert restarted_cut["history_hash"] == full_cut["history_hash"]
    assert restarted_cut["events"] == full_cut["events"] < full["events"]

    # The operator API's replay restarts the same way.
    runtime = await ExchangeRuntime.open(sharded.model_copy(update={"market_partitions": 3}))
    try:
        app = create_app(runtime, MarketData(runtime.log, runtime.topics, runtime.catalogue))
        key = await create_key(runtime.store.engine, "operator", Role.OPERATOR, "test")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            headers={"Authorization": f"Bearer {key.key}"},
        ) as client:
            replayed = (await client.get("/v1/admin/replay")).json()
    finally:
        await runtime.close()
    assert replayed["history_hash"] == full["history_hash"]
    assert replayed["started_from"] == sum(latest)


async def test_a_refused_shard_snapshot_sends_the_merged_replay_to_position_0(
    sharded: Settings,
) -> None:
    full, _ = _cx_replay(sharded, "--full")
    latest = await _latest_snapshots(sharded)
    store = open_event_store(sharded.shard_urls()[1])
    try:
        async with store.engine.begin() as connection:
            await connection.execute(
                update(snapshots)
                .where(snapshots.c.input_offset == latest[1])
                .values(state_hash="0" * 64)
            )
    finally:
        await store.close()
    replayed, stderr = _cx_replay(sharded)
    assert replayed["shard_snapshots"] is None
    assert replayed["events_read"] == full["events"]
    assert replayed["history_hash"] == full["history_hash"]
    assert "stored snapshot refused: shard 1: the snapshot at position" in stderr
    assert "it is corrupt" in stderr


def test_states_that_cannot_be_put_together_are_refused() -> None:
    catalogue = default_catalogue()
    owner = _owner
    fresh = ExchangeState(catalogue, partitions=PARTITIONS)
    empty = fresh.snapshot()
    combined = ExchangeState.restore(catalogue, combine([empty, empty], owner))
    assert combined.history_hash() == fresh.history_hash()
    order = ["o-1", "a1", GZ, "buy", 1800, 2]
    twice = [copy.deepcopy(empty) for _ in range(2)]
    for state in twice:
        state["accounts"]["open_orders"] = [order]
    with pytest.raises(NotCombinable, match="both hold accounts' open_orders"):
        combine(twice, owner)
    # A shard whose stage of a partition it does not settle has moved read its events.
    gz = partition_for(family_of(GZ), PARTITIONS)
    moved = [copy.deepcopy(empty) for _ in range(2)]
    moved[1 - owner(gz)]["markets"][gz]["engine"]["now"] = 1
    with pytest.raises(NotCombinable, match=f"moved the stage of matching partition {gz}"):
        combine(moved, owner)
    uneven = [copy.deepcopy(empty) for _ in range(2)]
    uneven[1]["markets"].pop()
    with pytest.raises(NotCombinable, match="different numbers of matching partitions"):
        combine(uneven, owner)
    unknown = [copy.deepcopy(empty) for _ in range(2)]
    unknown[0]["accounts"]["novelty"] = []
    with pytest.raises(NotCombinable, match="not known to combine: \\['novelty'\\]"):
        combine(unknown, owner)


def test_a_shards_stage_of_its_own_partition_is_taken_whole() -> None:
    """An auction in progress, the timers and the log time of a partition come from the shard
    settling it (each partition's stage holds only its own families)."""
    catalogue = default_catalogue()
    gz = partition_for(family_of(GZ), PARTITIONS)
    states = [ExchangeState(catalogue, partitions=PARTITIONS).snapshot() for _ in range(2)]
    stage = states[_owner(gz)]["markets"][gz]
    stage["engine"]["now"] = 1_700_000_000_000
    stage["engine"]["in_auction"] = [GZ]
    combined = combine(states, _owner)
    assert combined["markets"][gz] == stage
    assert combined["markets"][gz] is not states[1 - _owner(gz)]["markets"][gz]


def _owner(partition: int) -> int:
    return shard_of(partition, 2)


def _drawn_down_history() -> list[Event]:
    """A month's token bundle bought and drawn down by daily reports, and before its period an
    hour of cards traded in a family the other shard settles (TOK-QWEN.YRD is partition 0 of
    3, shard 0; H100-80G.GZ partition 1, shard 1; the accounts' deposits, shard 1)."""
    bank = bundle_bank()
    for account in ("p1", "b1", "p2", "b2"):
        bank.send(funds(account, 10_000_000))
    bank.send(DepositCapacity(deposit_id="c1", account_id="p1", symbol=BUNDLE, quantity=100))
    bank.send(DepositCapacity(deposit_id="c2", account_id="p2", symbol=GZ, quantity=100))
    bank.send(sell("s1", "p1", 1_234, 100))
    bank.send(buy("o1", "b1", 1_234, 30))
    for n in range(20):
        for account, side in (("p2", "sell"), ("b2", "buy")):
            order = PlaceOrder(order_id=f"g{n}{side}", account_id=account, symbol=GZ,
                               side=side, price=1_800 + 10 * (n % 3), quantity=2)  # fmt: skip
            bank.send(order)
    tick(bank, START)
    for day in range(25):
        drawn = bank.send(meter(f"d{day}", 700_001), START + day * DAY + 23 * 3_600_000)
        assert any(isinstance(event, BundleDrawn) for event in drawn), drawn
    return bank.events


async def test_a_merged_replay_restarts_from_snapshots_of_a_bundle_drawn_down(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once refused with `KeyError('drawdowns')` (and replayed from 0): a shard's snapshot
    holding a bundle's draw-downs combines with the other's, the merged replay restarts from
    them, reads only what follows, and ends where a replay from position 0 does."""
    catalogue = default_catalogue(RULES, [LISTING])
    parts: list[list[Event]] = [[], []]
    for event in _drawn_down_history():
        parts[_shard(event)].append(event)
    assert [e for e in parts[0] if isinstance(e, BundleDrawn)], "the bundle is not in shard 0"
    async with (
        fresh_database(postgres_url) as home_url,
        fresh_database(postgres_url) as other_url,
    ):
        stores = [open_event_store(home_url), open_event_store(other_url)]
        try:
            with monkeypatch.context() as patch:
                patch.setattr(projections, "CHECKPOINT_EVERY", 10)
                patch.setattr(projections, "SNAPSHOT_EVERY", 20)
                for store, part in zip(stores, parts, strict=True):
                    await _settle(store, part, catalogue, batch_size=5)
            async with viewing(stores) as views:
                full = await replay_merged_stored(views, catalogue, PARTITIONS, full=True)
                restarted = await replay_merged_stored(views, catalogue, PARTITIONS)
            async with stores[0].engine.connect() as connection:
                taken = (
                    await connection.execute(
                        select(snapshots.c.data).where(
                            snapshots.c.stage == SNAPSHOT_STAGE,
                            snapshots.c.input_offset == (restarted.snapshots or [0])[0],
                        )
                    )
                ).scalar_one_or_none()
        finally:
            for store in stores:
                await store.close()
    assert full.snapshots is None
    assert full.read == sum(map(len, parts))
    assert restarted.result.refused is None, restarted.result.refused
    assert restarted.snapshots is not None
    # The bundle's shard restarted from a snapshot taken while the bundle was drawn down.
    assert taken is not None
    assert taken["markets"][0]["delivery"]["drawdowns"], taken["markets"][0]["delivery"]
    assert 0 < restarted.read == full.read - sum(restarted.snapshots) < full.read
    assert restarted.result.state.history_hash() == full.result.state.history_hash()
    assert restarted.result.state.state_hash() == full.result.state.state_hash()
