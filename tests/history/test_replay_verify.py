"""`cx replay --verify` verifies what can be verified and says so.

A short history has no checkpoint (settlement records one every 1,000 events) before most
points: verifying there finds nothing to contradict, says so, and exits 0. Settlement's snapshots
(taken at least on each clean stop) are recorded state hashes too. Only a real mismatch fails,
and a time cut does not compare a checkpoint that comes after an event the cut leaves out.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cx.migrations import upgrade_to_head
from cx.settings import Settings
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import event_from_dict
from settlement.replay import replay
from settlement.service import stream_of
from settlement.sql_store import open_event_store
from settlement.store import NewEvent
from tests.e2e.harness import running_exchange, settings_for, settle
from tests.history.helpers import GZ0, Clock, cx, funded_buyer, funded_provider, ok, order

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def short_history(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A few dozen events through the API, on the embedded default, stopped cleanly."""
    settings = settings_for(tmp_path_factory.mktemp("short"))

    async def trade() -> None:
        clock = Clock()
        async with running_exchange(settings, clock_ms=clock) as exchange:
            provider = await funded_provider(exchange, GZ0)
            buyer = await funded_buyer(exchange)
            for price in (1800, 1810, 1820):
                await ok(provider.post("/v1/orders", json=order("sell", price, 2)))
            clock.advance(10_000)
            await ok(buyer.post("/v1/orders", json=order("buy", 1810, 3)))
            await settle(exchange.runtime)

    asyncio.run(trade())
    return settings


def _database(settings: Settings) -> Path:
    return settings.data_dir / "events.sqlite3"


def _replayed(settings: Settings, *args: str) -> dict[str, Any]:
    done = cx(settings, "replay", *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_a_point_before_any_checkpoint_has_nothing_to_verify_and_passes(
    short_history: Settings,
) -> None:
    with sqlite3.connect(_database(short_history)) as db:
        (last,) = db.execute("select max(position) from events").fetchone()
        assert not db.execute("select count(*) from checkpoints").fetchone()[0]
    middle = last // 2
    state_hash = _replayed(short_history, "--until", str(middle))["state_hash"]

    done = cx(short_history, "replay", "--until", str(middle), "--verify")
    assert done.returncode == 0, done.stdout + done.stderr
    said = " ".join(done.stdout.split())
    assert (
        f"no checkpoint at or before position {middle}: nothing to verify; state hash {state_hash}"
    ) in said

    verified = _replayed(short_history, "--until", str(middle), "--verify")["verified"]
    assert (verified["checkpoints"], verified["mismatches"]) == (0, [])


def test_the_snapshot_of_a_clean_stop_is_verified_at_the_end(short_history: Settings) -> None:
    document = _replayed(short_history, "--verify")
    assert document["verified"]["checkpoints"] == 1
    assert document["verified"]["summary"] == (
        f"the replay matches 1 checkpoint at or before position {document['position']}"
    )


def test_a_time_cut_before_any_checkpoint_passes(short_history: Settings) -> None:
    with sqlite3.connect(_database(short_history)) as db:
        (data,) = db.execute("select data from events where type = 'TradeExecuted'").fetchone()
    before_the_trade = datetime.fromtimestamp(json.loads(data)["ts"] / 1000 - 5, UTC)
    done = cx(short_history, "replay", "--until", before_the_trade.isoformat(), "--verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to verify" in done.stdout


def test_a_history_without_any_recorded_hash_passes_and_says_so(
    short_history: Settings, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path)
    shutil.copy(_database(short_history), _database(settings))
    with sqlite3.connect(_database(settings)) as db:
        db.execute("delete from snapshots")
    done = cx(settings, "replay", "--verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to verify" in done.stdout


def test_a_real_mismatch_still_fails(short_history: Settings, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    shutil.copy(_database(short_history), _database(settings))
    with sqlite3.connect(_database(settings)) as db:
        position, data = db.execute(
            "select position, data from events where type = 'TradeExecuted'"
        ).fetchone()
        trade = json.loads(data)
        db.execute(
            "update events set data = ? where position = ?",
            (json.dumps({**trade, "price": trade["price"] - 10}), position),
        )
    # The rewritten trade comes before the snapshot of the clean stop, which a replay would
    # restart from: only a replay from position 0 reads it again.
    done = cx(settings, "replay", "--verify", "--full")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISMATCH at" in done.stdout
    assert "the replay differs from 1 of 1 checkpoints" in " ".join(done.stdout.split())


def _event(kind: str, ts: int, event_id: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, "event_id": event_id, "ts": ts, **fields}


async def test_a_time_cut_compares_no_checkpoint_after_an_event_it_leaves_out(
    tmp_path: Path,
) -> None:
    # Two commands partitions whose events were stored interleaved: position order is not
    # log-time order across partitions.
    rows = [
        _event("FundsDeposited", 1_000, "c:0:0:0", deposit_id="d1", account_id="a", amount=500),
        _event(
            "CapacityDeposited",
            3_000,
            "c:1:0:0",
            deposit_id="d2",
            account_id="p",
            symbol=GZ0,
            quantity=8,
        ),
        _event("FundsDeposited", 2_000, "c:0:1:0", deposit_id="d3", account_id="b", amount=700),
    ]
    settings = settings_for(tmp_path)
    store = open_event_store(settings.event_store_url())
    await store.initialise(upgrade_to_head)
    stored = await store.append(
        [
            NewEvent(row["event_id"], stream_of(event_from_dict(row)), row["type"], row)
            for row in rows
        ]
    )
    positions = [event.position for event in stored]
    hashes = {}
    for position in positions:
        result = await replay(
            store,
            default_catalogue(),
            until_position=position,
            partitions=settings.market_partitions,
        )
        hashes[position] = result.state.state_hash()
    await store.close()
    with sqlite3.connect(_database(settings)) as db:
        db.executemany(
            "insert into checkpoints (position, state_hash, taken_at) values (?, ?, '2027-01-01')",
            [(positions[0], hashes[positions[0]]), (positions[2], hashes[positions[2]])],
        )

    # At 2.5 s the second partition's deposit is left out, so the live state at the last
    # position (which had it) cannot be compared; the first position can.
    done = cx(settings, "replay", "--until", "1970-01-01T00:00:02.500+00:00", "--verify", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert document["verified"]["checkpoints"] == 1
    assert document["verified"]["not_comparable"] == 1
    assert document["verified"]["mismatches"] == []
    assert sorted(document["accounts"]) == ["a", "b"]

    whole = _replayed(settings, "--verify")["verified"]
    assert (whole["checkpoints"], whole["not_comparable"], whole["mismatches"]) == (2, 0, [])
