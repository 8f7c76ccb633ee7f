"""The PostgreSQL primary lost under load: pg_auto_failover promotes the synchronous standby,
settlement resumes on it, and no committed event is lost.

The exchange runs on the cluster of `make failover`: its DATABASE_URL names both servers with
target_session_attrs=read-write, so every new connection goes to whichever takes writes.
Buyers and providers place orders through the API at a steady pace (tests/e2e/steady_load.py).
Mid-run, with every event so far read back as committed, the primary's pg_autoctl and Postgres
are killed (SIGKILL) as if its machine were gone. The monitor promotes the standby; settlement,
which retries while the database is away, reconnects to it and settles on. The times from the
kill to the promotion and to settlement's first progress on the new primary are measured.

Afterwards: every event committed before the kill is there, in order, unchanged (synchronous
replication); every order the API accepted is settled exactly once; the balances add up; and
`cx audit` finds nothing and `cx replay --verify` matches the state hashes the live system
recorded, both run as commands against the new primary.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cx.runtime import ExchangeRuntime
from settlement.store import StoredEvent
from tests.conftest import fresh_database
from tests.e2e.harness import eventually, running_exchange, settings_for, settle
from tests.e2e.steady_load import (
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


async def _all_events(runtime: ExchangeRuntime) -> list[StoredEvent]:
    found: list[StoredEvent] = []
    position = 0
    for _ in range(10_000):  # bounded: pages of 1,000 events
        page = await runtime.store.read_all(position, 1000)
        if not page:
            break
        found.extend(page)
        position = page[-1].position
    return found


async def _settled_offsets(runtime: ExchangeRuntime) -> int:
    """How far settlement has read, summed over the partitions (-1 while the store is away)."""
    try:
        return sum((await runtime.store.consumer_offsets("settlement")).values())
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


async def test_the_primary_lost_the_standby_takes_over_losing_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    assert cluster.services("pg-node", "state") == "node1:primary node2:secondary"
    async with fresh_database(cluster.database_url) as database_url:
        overrides = {
            "CX_COMMAND_PARTITIONS": PARTITIONS,
            "CX_MARKET_PARTITIONS": PARTITIONS,
            "CX_SNAPSHOT_EVERY": 50,
        }
        settings = settings_for(
            tmp_path, kafka=cluster.kafka, database_url=database_url, **overrides
        )
        load = Load()
        async with running_exchange(settings) as exchange:
            runtime = exchange.runtime
            clients = await traders(exchange)
            loaders = Loaders(load, clients)
            try:
                await eventually(lambda: loaders.answered(BEFORE), "orders before the kill", 120)
                committed = await _all_events(runtime)
                settled_before = await _settled_offsets(runtime)
                cluster.services("pg-node", "kill", "node1")
                killed_at = loop.time()

                async def promoted() -> bool:
                    state = await asyncio.to_thread(cluster.services, "pg-node", "state")
                    return state.split()[1] in {"node2:wait_primary", "node2:primary"}

                await eventually(promoted, "the standby's promotion", PROMOTION_BOUND_S)
                promoted_s = loop.time() - killed_at

                async def resumed() -> bool:
                    return await _settled_offsets(runtime) > settled_before

                await eventually(resumed, "settlement on the new primary", RESUME_BOUND_S)
                resumed_s = loop.time() - killed_at
                at_resume = load.answered()
                await eventually(
                    lambda: loaders.answered(at_resume + AFTER), "orders after the failover", 180
                )
            finally:
                await loaders.stop()

            await settle(runtime, timeout_s=180)
            after = await _all_events(runtime)
            # Nothing committed before the kill is lost or changed (synchronous replication).
            assert after[: len(committed)] == committed
            await every_accepted_order_settled_once(runtime, load)
            await balances_add_up(clients, runtime.store.engine)

        environment = {
            "KAFKA_BOOTSTRAP_SERVERS": cluster.kafka,
            "DATABASE_URL": database_url,
            "CX_DATA_DIR": str(tmp_path),
            "CX_TOPIC_PREFIX": settings.topic_prefix,
            **{name: str(value) for name, value in overrides.items()},
        }
        audited = _cx(environment, "audit", "--json")
        assert audited.returncode == 0, audited.stdout[-3000:] + audited.stderr[-3000:]
        report = json.loads(audited.stdout)
        replayed = _cx(environment, "replay", "--verify", "--json")
        assert replayed.returncode == 0, replayed.stdout[-3000:] + replayed.stderr[-3000:]
        verified = json.loads(replayed.stdout)["verified"]
        assert verified["mismatches"] == [], verified
        assert verified["checkpoints"] > 0, verified

    print(
        f"\npostgres primary lost: {len(committed)} events committed before the kill, "
        f"{len(after)} after; standby promoted {promoted_s:.1f}s after the kill, settlement "
        f"resumed on it {resumed_s:.1f}s after; {load.answered()} orders answered "
        f"({len(load.accepted)} accepted), answers {dict(load.answers)}; audit "
        f"{report.get('summary', report)!s:.200}; replay: {verified['summary']}; "
        f"{time.monotonic() - started:.0f}s"
    )
