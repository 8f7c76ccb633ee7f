"""With settlement in shards, `cx history`, the API's `/v1/admin/history` and its
`/v1/admin/events` show every shard's events in the merged history's order (the order a
replay of every shard folds them in), each labelled with its shard; filters apply to that
order, and the events' cursors page through it without skipping or repeating an event while
a shard goes on storing."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.keys import Role, create_key
from api.marketdata import MarketData
from cx.migrations import upgrade_to_head
from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from settlement.shards import MergedView, viewing
from settlement.sql_store import SqlEventStore, open_event_store
from settlement.store import NewEvent
from tests.conftest import fresh_database
from tests.e2e.harness import settings_for
from tests.history.helpers import ROOT

T0 = 1_800_000_000_000
SHARD_EVENTS = (
    # Each shard's log times fall back now and then: a shard interleaves several partitions
    # in the order it settled them, and each partition's own times only grow.
    [(100, "a"), (300, "b"), (150, "a"), (400, "b")],
    [(200, "a"), (120, "b"), (400, "a")],
)
MERGED = [(0, 1), (1, 1), (1, 2), (0, 2), (0, 3), (0, 4), (1, 3)]
"""(shard, position) in the merged order: at each step the shards' next events are compared
by log time (ties: the lower shard) and each shard's own order is kept. Sorting every event
by log time would give another order: (0, 1), (1, 2), (0, 3), (1, 1), ..."""


@pytest.fixture
async def sharded(tmp_path: Path, postgres_url: str) -> AsyncIterator[Settings]:
    """Two settlement shards, two databases on the test's PostgreSQL server, holding
    SHARD_EVENTS."""
    async with (
        fresh_database(postgres_url) as home_url,
        fresh_database(postgres_url) as other_url,
    ):
        stores = [open_event_store(home_url), open_event_store(other_url)]
        try:
            for shard, (store, stored) in enumerate(zip(stores, SHARD_EVENTS, strict=True)):
                await store.initialise(upgrade_to_head)
                for n, (ts, account) in enumerate(stored):
                    await _note(store, f"s{shard}-{n}", T0 + ts, account)
        finally:
            for store in stores:
                await store.close()
        yield settings_for(tmp_path, database_url=home_url, CX_SETTLEMENT_SHARDS=other_url)


async def _note(store: SqlEventStore, event_id: str, ts: int, account: str) -> None:
    data = {"type": "NoteRecorded", "ts": ts, "account_id": account, "note": event_id}
    await store.append([NewEvent(event_id, f"account-{account}", "NoteRecorded", data)])


async def test_the_merged_order_is_the_replays(sharded: Settings) -> None:
    stores = [open_event_store(url) for url in sharded.shard_urls()]
    try:
        async with viewing(stores) as views:
            merged = MergedView(views)
            assert len(await merged.read_all(0, 100)) == len(MERGED)
        assert [merged.origin[p] for p in sorted(merged.origin)] == MERGED
    finally:
        for store in stores:
            await store.close()


def _cx_history(settings: Settings, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env |= {
        "CX_DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": str(settings.database_url),
        "CX_SETTLEMENT_SHARDS": settings.settlement_shards,
    }
    done = subprocess.run(
        [sys.executable, "-m", "cx.cli", "history", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _labels(lines: str) -> list[tuple[int, int]]:
    return [(e["shard"], e["position"]) for e in map(json.loads, lines.splitlines())]


async def test_cx_history_shows_every_shard_merged_and_filtered(sharded: Settings) -> None:
    assert _labels(_cx_history(sharded)) == MERGED
    # The filter applies to the merged order: shard by shard, then merged, would put (0, 3)
    # (logged at 150) before (1, 1) (at 200).
    assert _labels(_cx_history(sharded, "--account", "a")) == [(0, 1), (1, 1), (0, 3), (1, 3)]
    since = _cx_history(sharded, "--since", str(T0 + 150), "--until", str(T0 + 300))
    assert _labels(since) == [(1, 1), (0, 2), (0, 3)]
    rows = list(csv.reader(io.StringIO(_cx_history(sharded, "--format", "csv", "--account", "b"))))
    assert rows[0] == ["shard", "position", "event_id", "stream_id", "type", "schema_version",
                       "ts", "data"]  # fmt: skip
    assert [(row[0], row[1], row[2], row[6]) for row in rows[1:]] == [
        ("1", "2", "s1-1", str(T0 + 120)),
        ("0", "2", "s0-1", str(T0 + 300)),
        ("0", "4", "s0-3", str(T0 + 400)),
    ]


@pytest.fixture
async def operator(sharded: Settings) -> AsyncIterator[httpx.AsyncClient]:
    runtime = await ExchangeRuntime.open(sharded)
    try:
        app = create_app(runtime, MarketData(runtime.log, runtime.topics, runtime.catalogue))
        key = await create_key(runtime.store.engine, "operator", Role.OPERATOR, "test")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            headers={"Authorization": f"Bearer {key.key}"},
        ) as client:
            yield client
    finally:
        await runtime.close()


async def _page(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/admin/events", params=params)
    assert response.status_code == 200, response.text
    page: list[dict[str, Any]] = response.json()
    return page


async def test_the_api_pages_through_every_shard_with_cursors(
    sharded: Settings, operator: httpx.AsyncClient
) -> None:
    exported = await operator.get("/v1/admin/history", params={"account_id": "a"})
    assert exported.status_code == 200, exported.text
    assert _labels(exported.text) == [(0, 1), (1, 1), (0, 3), (1, 3)]
    assert [json.loads(line)["data"]["note"] for line in exported.text.splitlines()] == [
        "s0-0",
        "s1-0",
        "s0-2",
        "s1-2",
    ]
    as_csv = await operator.get("/v1/admin/history", params={"format": "csv"})
    assert as_csv.text.splitlines()[0].startswith("shard,position,")
    assert len(as_csv.text.splitlines()) == 1 + len(MERGED)

    first = await _page(operator, limit=3)
    assert [(e["shard"], e["position"]) for e in first] == MERGED[:3]
    assert [e["cursor"] for e in first] == ["1,0", "1,1", "1,2"]
    assert first[0]["data"]["note"] == "s0-0"
    assert first[1]["stream_id"] == "account-a"
    # Shard 1 stores an event logged before everything read so far: the cursor, each shard's
    # last position read, still leads to it, and to nothing twice.
    store = open_event_store(sharded.shard_urls()[1])
    try:
        await _note(store, "late", T0 + 50, "b")
    finally:
        await store.close()
    second = await _page(operator, cursor=first[-1]["cursor"], limit=3)
    third = await _page(operator, cursor=second[-1]["cursor"], limit=3)
    assert [(e["shard"], e["position"]) for e in second + third] == [
        *MERGED[3:],
        (1, 4),
    ]
    assert third[-1]["data"]["note"] == "late"
    assert await _page(operator, cursor=third[-1]["cursor"]) == []

    refusals: list[tuple[dict[str, str | int], str]] = [
        ({"after": 2}, "continue with the last event's `cursor`"),
        ({"cursor": "3"}, "is not 2 position(s)"),
        ({"cursor": "1,x"}, "is not 2 position(s)"),
        ({"cursor": "1,2", "after": 1}, "not both"),
        ({"cursor": f"1,{2**63}"}, "names a position past"),
    ]
    for params, complaint in refusals:
        refused = await operator.get("/v1/admin/events", params=params)
        assert refused.status_code == 422, (params, refused.text)
        problem = refused.json()
        assert problem["type"].endswith("invalid-cursor"), problem
        assert complaint in problem["detail"], (params, problem)


async def _stream(client: httpx.AsyncClient, stream: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/admin/streams/{stream}", params=params)
    assert response.status_code == 200, response.text
    page: list[dict[str, Any]] = response.json()
    return page


async def test_a_stream_shows_its_events_in_every_shard(operator: httpx.AsyncClient) -> None:
    """An account's stream spans shards: its events in each, merged in the replay's order as
    the history's are, labelled with their shard and each shard's own stream version."""
    stream = await _stream(operator, "account-a")
    assert [(e["shard"], e["position"], e["stream_version"]) for e in stream] == [
        (0, 1, 1),
        (1, 1, 1),
        (0, 3, 2),
        (1, 3, 2),
    ]
    assert [e["data"]["note"] for e in stream] == ["s0-0", "s1-0", "s0-2", "s1-2"]
    assert {e["stream_id"] for e in stream} == {"account-a"}
    # Each shard's stream from its version 2 on; and page by page with the cursors.
    later = await _stream(operator, "account-a", from_version=2)
    assert [(e["shard"], e["position"]) for e in later] == [(0, 3), (1, 3)]
    first = await _stream(operator, "account-a", limit=3)
    rest = await _stream(operator, "account-a", cursor=first[-1]["cursor"])
    assert first + rest == stream
    assert await _stream(operator, "account-a", cursor=rest[-1]["cursor"]) == []
    b = await _stream(operator, "account-b")
    assert [(e["shard"], e["position"]) for e in b] == [(1, 2), (0, 2), (0, 4)]
    refused = await operator.get("/v1/admin/streams/account-a", params={"cursor": "3"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("invalid-cursor")
    assert "is not 2 position(s)" in refused.json()["detail"]


async def test_one_shard_pages_as_before(tmp_path: Path, database_url: str) -> None:
    store = open_event_store(database_url)
    try:
        await store.initialise(upgrade_to_head)
        for n, (ts, account) in enumerate(SHARD_EVENTS[0]):
            await _note(store, f"e{n}", T0 + ts, account)
    finally:
        await store.close()
    runtime = await ExchangeRuntime.open(settings_for(tmp_path, database_url=database_url))
    try:
        app = create_app(runtime, MarketData(runtime.log, runtime.topics, runtime.catalogue))
        key = await create_key(runtime.store.engine, "operator", Role.OPERATOR, "test")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            headers={"Authorization": f"Bearer {key.key}"},
        ) as client:
            after = await _page(client, after=1, limit=2)
            assert [(e["shard"], e["position"], e["cursor"]) for e in after] == [
                (0, 2, "2"),
                (0, 3, "3"),
            ]
            assert await _page(client, cursor="1", limit=2) == after
            stream = await _stream(client, "account-a")
            assert [(e["shard"], e["position"], e["cursor"]) for e in stream] == [
                (0, 1, "1"),
                (0, 3, "3"),
            ]
            assert await _stream(client, "account-a", cursor="1") == stream[1:]
            exported = await client.get("/v1/admin/history", params={"format": "csv"})
            assert exported.text.splitlines()[0].startswith("position,event_id,")
            assert "shard" not in (await client.get("/v1/admin/history")).text
    finally:
        await runtime.close()
