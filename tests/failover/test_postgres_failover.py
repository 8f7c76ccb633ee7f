"""The PostgreSQL primaries lost under load: pg_auto_failover promotes each shard's synchronous
standby, settlement resumes on them, and no committed event is lost.

The exchange runs on the cluster of `make failover` with settlement in two shards, each a
formation of its own (a primary and a synchronous standby) under one monitor: DATABASE_URL and
CX_SETTLEMENT_SHARDS name both servers of a formation with target_session_attrs=read-write, so
every new connection goes to whichever takes writes. Buyers and providers place orders through
the API at a steady pace (tests/e2e/steady_load.py) in families that settle in both shards.
Mid-run, with every event so far read back as committed, both primaries' pg_autoctl and
Postgres are killed (SIGKILL) as if their machines were gone. The monitor promotes each standby;
settlement, which retries while a database is away, reconnects to them and settles on. The
times from the kill to the promotions and to settlement's first progress in every shard on the
new primaries are measured.

Afterwards: every event committed before the kill is there, in order, unchanged, in every shard
(synchronous replication); every order the API accepted is settled exactly once; the balances
add up; and `cx audit` finds nothing in any shard or over all, and `cx replay --verify` matches
the state hashes the live system recorded, both run as commands against the new primaries.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from settlement.shards import shard_of
from settlement.sql_store import SqlEventStore
from settlement.store import StoredEvent
from tests.conftest import fresh_database
from tests.e2e.harness import eventually, running_exchange, settings_for, settle
from tests.e2e.steady_load import (
    SYMBOLS,
    Load,
    Loaders,
    balances_add_up,
    every_accepted_order_settled_once,
    traders,
)
from tests.failover.conftest import ROOT, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

PARTITIONS = 3
BEFORE = 40  # orders answered before the primary is killed
AFTER = 40  # orders answered once settlement runs on the new primary
PROMOTION_BOUND_S = 60.0
RESUME_BOUND_S = 90.0


async def _all_events(store: SqlEventStore) -> list[StoredEvent]:
    found: list[StoredEvent] = []
    position = 0
    for _ in range(10_000):  # bounded: pages of 1,000 events
        page = await store.read_all(position, 1000)
        if not page:
            break
        found.extend(page)
        position = page[-1].position
    return found


async def _settled_offsets(store: SqlEventStore) -> int:
    """How far a shard's settlement has read, summed over its partitions (-1 while the store
    is away)."""
    try:
        return sum((await store.consumer_offsets("settlement")).values())
    except Exception:  # the store is away: that is what is being waited out
        return -1


def _cx(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "cx"), *args],
        env={**os.environ, **settings_env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )


async def test_the_primaries_lost_the_standbys_take_over_losing_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    assert len(cluster.settlement_shards) == 1, "the cluster of make failover has two shards"
    assert cluster.services("pg-node", "state") == (
        "node1:primary node2:secondary node3:primary node4:secondary"
    )
    async with AsyncExitStack() as databases:
        database_url = await databases.enter_async_context(fresh_database(cluster.database_url))
        shard_url = await databases.enter_async_context(
            fresh_database(cluster.settlement_shards[0])
        )
        overrides: dict[str, Any] = {
            "CX_COMMAND_PARTITIONS": PARTITIONS,
            "CX_MARKET_PARTITIONS": PARTITIONS,
            "CX_SNAPSHOT_EVERY": 50,
            "CX_SETTLEMENT_SHARDS": shard_url,
        }
        settings = settings_for(
            tmp_path, kafka=cluster.kafka, database_url=database_url, **overrides
        )
        load = Load()
        async with running_exchange(settings) as exchange:
            runtime = exchange.runtime
            shards = runtime.shards
            assert len(shards) == 2
            traded = {shard_of(runtime.topics.market_partition(s), 2) for s in SYMBOLS}
            assert traded == {0, 1}, "the load trades families of both shards"
            clients = await traders(exchange)
            loaders = Loaders(load, clients)
            try:
                await eventually(lambda: loaders.answered(BEFORE), "orders before the kill", 120)
                committed = [await _all_events(shard) for shard in shards]
                assert all(committed), "both shards settled events before the kill"
                settled_before = [await _settled_offsets(shard) for shard in shards]
                cluster.services("pg-node", "kill", "node1")
                cluster.services("pg-node", "kill", "node3")
                killed_at = loop.time()

                async def promoted() -> bool:
                    state = await asyncio.to_thread(cluster.services, "pg-node", "state")
                    nodes = state.split()
                    return nodes[1] in {"node2:wait_primary", "node2:primary"} and nodes[3] in {
                        "node4:wait_primary",
                        "node4:primary",
                    }

                await eventually(promoted, "both standbys' promotion", PROMOTION_BOUND_S)
                promoted_s = loop.time() - killed_at

                async def resumed() -> bool:
                    now = [await _settled_offsets(shard) for shard in shards]
                    return all(n > b for n, b in zip(now, settled_before, strict=True))

                await eventually(resumed, "settlement on both new primaries", RESUME_BOUND_S)
                resumed_s = loop.time() - killed_at
                at_resume = load.answered()
                await eventually(
                    lambda: loaders.answered(at_resume + AFTER), "orders after the failover", 180
                )
            finally:
                await loaders.stop()

            await settle(runtime, timeout_s=180)
            after = [await _all_events(shard) for shard in shards]
            # Nothing committed before the kill is lost or changed (synchronous replication).
            for before_kill, now in zip(committed, after, strict=True):
                assert now[: len(before_kill)] == before_kill
            await every_accepted_order_settled_once(runtime, load)
            await balances_add_up(clients, runtime)

        environment = {
            "KAFKA_BOOTSTRAP_SERVERS": cluster.kafka,
            "DATABASE_URL": database_url,
            "CX_DATA_DIR": str(tmp_path),
            "CX_TOPIC_PREFIX": settings.topic_prefix,
            **{name: str(value) for name, value in overrides.items()},
        }
        audited = _cx(environment, "audit", "--json")
        assert audited.returncode == 0, audited.stdout[-3000:] + audited.stderr[-3000:]
        reports = json.loads(audited.stdout)["shards"]
        assert [r["shard"] for r in reports] == ["shard 0", "shard 1", "all shards"]
        replayed = _cx(environment, "replay", "--verify", "--json")
        assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-3000:]
        verified = json.loads(replayed.stdout)["verified"]
        assert verified["mismatches"] == [], verified
        assert verified["checkpoints"] > 0, verified

    print(
        f"\npostgres primaries of both shards lost: {[len(c) for c in committed]} events "
        f"committed before the kill, {[len(a) for a in after]} after; standbys promoted "
        f"{promoted_s:.1f}s after the kill, settlement resumed on both {resumed_s:.1f}s after; "
        f"{load.answered()} orders answered ({len(load.accepted)} accepted), answers "
        f"{dict(load.answers)}; audit discrepancies "
        f"{ {r['shard']: len(r['discrepancies']) for r in reports} }; "
        f"replay: {verified['summary']}; {time.monotonic() - started:.0f}s"
    )
