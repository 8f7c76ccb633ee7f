"""Replay and audit from the event store: the live state is rebuilt, tampering is reported."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cx.migrations import upgrade_to_head
from cx.settings import Settings
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import event_from_dict
from settlement import projections
from settlement.audit import audit
from settlement.history import history_query
from settlement.replay import replay
from settlement.service import SettlementRunner, stream_of
from settlement.sql_store import open_event_store
from settlement.store import NewEvent
from tests.conftest import fresh_database
from tests.e2e.harness import RunningExchange, running_exchange, settings_for, settle

ROOT = Path(__file__).resolve().parents[2]
GZ0 = "H100-80G.GZ.20271201T00"
YRD0 = "H100-80G.YRD.20271201T00"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A traded history on the embedded default, with checkpoints every 25 events."""
    data_dir = tmp_path_factory.mktemp("history")
    settings = settings_for(data_dir)
    patch = pytest.MonkeyPatch()
    patch.setattr(projections, "CHECKPOINT_EVERY", 25)
    try:
        live = asyncio.run(_trade(settings))
    finally:
        patch.undo()
    return {"settings": settings, "database": data_dir / "events.sqlite3", **live}


async def _trade(settings: Settings) -> dict[str, Any]:
    rng = random.Random(6)
    async with running_exchange(settings) as exchange:
        post = exchange.client.post
        for buyer in ("b1", "b2"):
            await post(f"/v1/accounts/{buyer}/deposits", json={"kind": "cash", "amount": 10**7})
        for seller in ("s1", "s2"):
            for symbol in (GZ0, YRD0):
                await post(
                    f"/v1/accounts/{seller}/deposits",
                    json={"kind": "capacity", "symbol": symbol, "quantity": 200},
                )
        placed = []
        for n in range(120):
            side = rng.choice(["buy", "sell"])
            account = rng.choice(["b1", "b2"] if side == "buy" else ["s1", "s2"])
            response = await post(
                "/v1/orders",
                json={
                    "account_id": account,
                    "symbol": rng.choice([GZ0, YRD0]),
                    "side": side,
                    "price": 1800 + rng.randint(-3, 3) * 10,
                    "quantity": rng.randint(1, 6),
                },
            )
            assert response.status_code == 201, response.text
            placed.append((response.json()["order_id"], account))
            if n % 7 == 3:
                order_id, owner = rng.choice(placed)
                await exchange.client.delete(f"/v1/orders/{order_id}", params={"account_id": owner})
        await settle(exchange.runtime)
        return _live_state(exchange)


def _live_state(exchange: RunningExchange) -> dict[str, Any]:
    settlement = exchange.runtime.running["settlement"]
    assert isinstance(settlement, SettlementRunner)
    state = settlement.projection.state
    return {"live_hash": state.state_hash(), "live_position": state.position}


async def test_replay_to_the_end_rebuilds_the_live_state_and_matches_every_checkpoint(
    history: dict[str, Any],
) -> None:
    store = open_event_store(history["settings"].event_store_url())
    checkpoints = _checkpoints(history["database"])
    # Taken at batch ends once 25 events have passed: how many depends on batching.
    assert checkpoints
    partitions = history["settings"].market_partitions
    result = await replay(
        store, default_catalogue(), checkpoints=checkpoints, partitions=partitions
    )
    await store.close()
    assert result.state.position == history["live_position"]
    assert result.state.state_hash() == history["live_hash"]
    assert result.checked == len(checkpoints)
    assert result.mismatches == []
    assert (
        result.state.books[GZ0].best_bid() is not None
        or result.state.books[GZ0].best_ask() is not None
    )


async def test_replay_stops_at_a_position_and_at_a_time(history: dict[str, Any]) -> None:
    checkpoints = _checkpoints(history["database"])
    middle = sorted(checkpoints)[len(checkpoints) // 2]
    store = open_event_store(history["settings"].event_store_url())
    partitions = history["settings"].market_partitions
    at_position = await replay(
        store, default_catalogue(), until_position=middle, partitions=partitions
    )
    assert at_position.state.position == middle
    assert at_position.state.state_hash() == checkpoints[middle]
    cut = at_position.state.ts
    assert cut is not None
    at_time = await replay(store, default_catalogue(), until_ts=cut, partitions=partitions)
    await store.close()
    with sqlite3.connect(history["database"]) as db:
        logged = [json.loads(data)["ts"] for (data,) in db.execute("select data from events")]
    assert at_time.state.applied == sum(1 for ts in logged if ts <= cut)
    assert at_time.state.applied < len(logged)
    assert at_time.state.ts == cut


def _cx(
    settings: Settings, *args: str, database: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env["CX_DATA_DIR"] = str(settings.data_dir)
    # The replica follows matching's partitions: the exchange's count, not the default.
    env["CX_MARKET_PARTITIONS"] = str(settings.market_partitions)
    if database is not None:
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{database}"
    return subprocess.run(
        [sys.executable, "-m", "cx.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cx_replay_verifies_a_point_and_filters(history: dict[str, Any]) -> None:
    checkpoints = _checkpoints(history["database"])
    middle = sorted(checkpoints)[len(checkpoints) // 2]
    done = _cx(history["settings"], "replay", "--until", str(middle), "--verify", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["position"] == middle
    assert document["state_hash"] == checkpoints[middle]
    assert document["verified"]["mismatches"] == []
    assert document["verified"]["checkpoints"] == sum(1 for p in checkpoints if p <= middle)

    narrow = _cx(history["settings"], "replay", "--contract", GZ0, "--account", "b1", "--json")
    assert narrow.returncode == 0, narrow.stderr
    document = json.loads(narrow.stdout)
    assert list(document["books"]) == [GZ0]
    assert list(document["accounts"]) == ["b1"]
    assert set(document["accounts"]["b1"]["positions"]) <= {GZ0}

    table = _cx(history["settings"], "replay")
    assert table.returncode == 0, table.stderr
    assert "state hash:" in table.stdout
    assert GZ0 in table.stdout

    unknown = _cx(history["settings"], "replay", "--contract", "NOPE")
    assert unknown.returncode == 2
    assert "'NOPE' is not listed" in unknown.stderr


def test_a_clean_history_audits_clean(history: dict[str, Any]) -> None:
    done = _cx(history["settings"], "audit")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no discrepancies" in done.stdout


def _checkpoints(database: Path) -> dict[int, str]:
    with sqlite3.connect(database) as db:
        return dict(db.execute("select position, state_hash from checkpoints"))


def _copy(history: dict[str, Any], tmp_path: Path) -> Path:
    copy = tmp_path / "copy.sqlite3"
    shutil.copy(history["database"], copy)
    return copy


def _events(db: sqlite3.Connection, event_type: str) -> list[tuple[int, dict[str, Any]]]:
    rows = db.execute(
        "select position, data from events where type = ? order by position", (event_type,)
    )
    return [(position, json.loads(data)) for position, data in rows]


def _insert_copy(db: sqlite3.Connection, position: int, data: dict[str, Any]) -> None:
    stream, version = db.execute(
        "select stream_id, (select max(stream_version) + 1 from events e2 where e2.stream_id = "
        "events.stream_id) from events where position = ?",
        (position,),
    ).fetchone()
    db.execute(
        "insert into events (stream_id, stream_version, event_id, type, schema_version, data, "
        "metadata) values (?, ?, ?, ?, 1, ?, '{}')",
        (stream, version, data["event_id"], data["type"], json.dumps(data)),
    )


async def _audit_copy(copy: Path, partitions: int) -> list[str]:
    store = open_event_store(f"sqlite+aiosqlite:///{copy}")
    await store.initialise(upgrade_to_head)
    report = await audit(store, default_catalogue(), partitions)
    await store.close()
    return [f"{d.kind}: {d}" for d in report.discrepancies]


async def test_a_trade_stored_twice_is_reported(history: dict[str, Any], tmp_path: Path) -> None:
    copy = _copy(history, tmp_path)
    with sqlite3.connect(copy) as db:
        position, trade = _events(db, "TradeExecuted")[0]
        _insert_copy(db, position, {**trade, "event_id": trade["event_id"] + "-again"})
    found = await _audit_copy(copy, history["settings"].market_partitions)
    assert any(f.startswith("trade-settled-twice") and trade["trade_id"] in f for f in found), found


async def test_a_lost_cancel_leaves_an_order_and_its_hold_unaccounted(
    history: dict[str, Any], tmp_path: Path
) -> None:
    copy = _copy(history, tmp_path)
    with sqlite3.connect(copy) as db:
        position, cancelled = _events(db, "OrderCancelled")[0]
        db.execute("delete from events where position = ?", (position,))
    found = await _audit_copy(copy, history["settings"].market_partitions)
    order_id = cancelled["order_id"]
    assert any(f.startswith("order-unaccounted") and order_id in f for f in found), found
    assert any(f.startswith("hold-outlives-order") and order_id in f for f in found), found


async def test_an_overfilled_order_is_reported(history: dict[str, Any], tmp_path: Path) -> None:
    copy = _copy(history, tmp_path)
    with sqlite3.connect(copy) as db:
        _, trade = _events(db, "TradeExecuted")[0]
        for position, accepted in _events(db, "OrderAccepted"):
            if accepted["order_id"] == trade["buy_order_id"]:
                shrunk = {**accepted, "quantity": trade["quantity"] - 1 or 1}
                db.execute(
                    "update events set data = ? where position = ?", (json.dumps(shrunk), position)
                )
    found = await _audit_copy(copy, history["settings"].market_partitions)
    assert any(trade["buy_order_id"] in f for f in found), found


async def test_a_trade_of_an_order_never_accepted_is_reported(
    history: dict[str, Any], tmp_path: Path
) -> None:
    copy = _copy(history, tmp_path)
    with sqlite3.connect(copy) as db:
        position, trade = _events(db, "TradeExecuted")[-1]
        forged = {
            **trade,
            "event_id": "forged:0:0:0",
            "trade_id": "forged",
            "buy_order_id": "ghost",
        }
        _insert_copy(db, position, forged)
    found = await _audit_copy(copy, history["settings"].market_partitions)
    assert any(f.startswith("trade-without-order") and "ghost" in f for f in found), found


async def test_a_ledger_projection_that_drifts_is_reported(
    history: dict[str, Any], tmp_path: Path
) -> None:
    copy = _copy(history, tmp_path)
    with sqlite3.connect(copy) as db:
        db.execute("update cash_balances set available = available + 1 where account_id = 'b1'")
        db.execute("update positions set quantity = quantity + 2 where account_id = 'b2'")
    found = await _audit_copy(copy, history["settings"].market_partitions)
    assert any(f.startswith("projection") and "cash_balances shows b1" in f for f in found), found
    assert any(f.startswith("projection") and "positions shows b2" in f for f in found), found


async def test_a_rewritten_price_breaks_the_recorded_checkpoints(
    history: dict[str, Any], tmp_path: Path
) -> None:
    copy = _copy(history, tmp_path)
    with sqlite3.connect(copy) as db:
        position, trade = _events(db, "TradeExecuted")[0]
        db.execute(
            "update events set data = ? where position = ?",
            (json.dumps({**trade, "price": trade["price"] - 10}), position),
        )
    found = await _audit_copy(copy, history["settings"].market_partitions)
    assert any(f.startswith("checkpoint") for f in found), found
    done = _cx(history["settings"], "audit", database=copy)
    assert done.returncode == 1
    assert "discrepancies" in done.stdout


def _exported(history: dict[str, Any], *args: str) -> list[dict[str, Any]]:
    done = _cx(history["settings"], "history", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_cx_history_exports_a_contract_an_account_an_order_and_a_time_window(
    history: dict[str, Any],
) -> None:
    with sqlite3.connect(history["database"]) as db:
        total_gz = db.execute(
            "select count(*) from events where stream_id = ?", (f"contract-{GZ0}",)
        ).fetchone()[0]
    by_contract = _exported(history, "--contract", GZ0)
    assert len(by_contract) == total_gz
    assert {e["stream_id"] for e in by_contract} == {f"contract-{GZ0}"}
    assert [e["position"] for e in by_contract] == sorted(e["position"] for e in by_contract)

    by_account = _exported(history, "--account", "b1")
    assert by_account
    for event in by_account:
        data = event["data"]
        assert "b1" in (data.get("account_id"), data.get("buyer_id"), data.get("seller_id"))

    trade = next(e for e in by_account if e["type"] == "TradeExecuted")["data"]
    by_order = _exported(history, "--order", trade["buy_order_id"])
    assert by_order[0]["type"] == "OrderAccepted"
    assert trade["trade_id"] in {e["data"].get("trade_id") for e in by_order}

    times = sorted(e["ts"] for e in by_contract)
    since, until = times[len(times) // 4], times[len(times) // 2]
    window = _exported(history, "--since", str(since), "--until", str(until))
    assert window
    assert all(since <= e["ts"] <= until for e in window)

    done = _cx(history["settings"], "history", "--contract", GZ0, "--format", "csv")
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert rows[0] == ["position", "event_id", "stream_id", "type", "schema_version", "ts", "data"]
    assert len(rows) == total_gz + 1
    assert json.loads(rows[1][6])["event_id"] == rows[1][1]


def _cx_history_into_a_reader_that_closes(
    history: dict[str, Any], lines_read: int
) -> tuple[int, str]:
    """`cx history | head -n lines_read`: the reader reads that many lines and goes away;
    cx's exit status and what it said on stderr."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env["CX_DATA_DIR"] = str(history["settings"].data_dir)
    with subprocess.Popen(
        [sys.executable, "-m", "cx.cli", "history"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        for _ in range(lines_read):
            assert process.stdout.readline()
        process.stdout.close()
        said = process.stderr.read()
        return process.wait(timeout=120), said


@pytest.mark.parametrize("lines_read", [0, 1])
def test_cx_history_into_a_reader_that_closes_early_exits_quietly(
    history: dict[str, Any], lines_read: int
) -> None:
    status, said = _cx_history_into_a_reader_that_closes(history, lines_read)
    assert "BrokenPipeError" not in said, said
    assert said == "", said
    # Closed before cx wrote anything, the reader is certainly gone when it writes; after a
    # line, the rest may all have fitted in the pipe before it went.
    assert status == 141 if lines_read == 0 else status in {0, 141}, status


async def test_history_filters_run_on_postgresql(postgres_url: str) -> None:
    rows = [
        json.loads(line)
        for line in (ROOT / "tests" / "fixtures" / "events_v1.jsonl").read_text().splitlines()
    ]
    async with fresh_database(postgres_url) as url:
        store = open_event_store(url)
        await store.initialise(upgrade_to_head)
        await store.append(
            [
                NewEvent(
                    event_id=row["event_id"],
                    stream_id=stream_of(event_from_dict(row)),
                    type=row["type"],
                    data=row,
                    schema_version=1,
                )
                for row in rows
            ]
        )
        async with store.engine.connect() as connection:
            buyer = (await connection.execute(history_query(account="buyer-1"))).all()
            order = (await connection.execute(history_query(order="o-1"))).all()
            window = (
                await connection.execute(
                    history_query(since_ts=1795670000200, until_ts=1795670000300)
                )
            ).all()
        await store.close()
    assert [r.type for r in buyer] == ["FundsDeposited", "OrderAccepted", "TradeExecuted"]
    assert [r.type for r in order] == ["OrderAccepted", "TradeExecuted"]
    assert [r.data["ts"] for r in window] == [1795670000200, 1795670000300]
