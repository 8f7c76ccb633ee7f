"""A Kafka broker restart mid-run: producers and consumers recover, nothing is lost or doubled.

The exchange (risk, matching, settlement, market data and the API, in this process) runs on a
private single-node broker (tests/e2e/private_kafka.py) and the shared PostgreSQL. Buyers and
providers place orders through the API at a steady pace, each with a client order id; a request
that fails while the broker is away is retried with the same id, as a client would. Mid-run the
broker is stopped (SIGTERM, a controlled shutdown) and started again on the same port and data.

Afterwards: every order the API accepted is settled exactly once, no order id was accepted
twice, the audit of the event store finds nothing (trades settled once on both sides, cash and
capacity conserved, no hold outliving its order, ledger agrees with the events), the balances
add up to the deposits, and each stage's state equals a clean replay of its input topic.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cx.runtime import ExchangeRuntime
from exchange.domain.catalogue import default_catalogue
from settlement.audit import audit
from tests.conftest import fresh_database
from tests.e2e.harness import (
    assert_stages_match_replay,
    eventually,
    free_port,
    running_exchange,
    settings_for,
    settle,
)
from tests.e2e.private_kafka import private_kafka
from tests.e2e.steady_load import (
    BUYERS,
    PROVIDERS,
    Load,
    Loaders,
    balances_add_up,
    every_accepted_order_settled_once,
    traders,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

BEFORE = 40  # orders answered before the broker stops
AFTER = 40  # orders answered after it is back
PARTITIONS = 3
OUTAGE_S = 8.0


async def test_broker_restart_mid_run_loses_and_repeats_nothing(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    # kafka_bootstrap only asserts Kafka is meant to be here; the restarted broker is private.
    del kafka_bootstrap
    started = time.monotonic()
    with private_kafka(free_port(), free_port()) as broker:
        async with fresh_database(postgres_url) as database_url:
            settings = settings_for(
                tmp_path,
                kafka=broker.bootstrap,
                database_url=database_url,
                CX_COMMAND_PARTITIONS=PARTITIONS,
                CX_MARKET_PARTITIONS=PARTITIONS,
                CX_SNAPSHOT_EVERY=50,
                # No ticks: each moves matching's clock (in its state hash), so one arriving after
                # settle would make the live hashes read there an earlier state than the replay's.
                CX_TICK_SECONDS=86_400,
            )
            load = Load()
            async with running_exchange(settings) as exchange:
                clients = await traders(exchange)
                loaders = Loaders(load, clients)
                try:
                    await eventually(
                        lambda: loaders.answered(BEFORE), "orders before the stop", 120
                    )
                    broker.stop()
                    away = asyncio.get_running_loop().time()
                    stopped_at = load.answered()
                    # Orders keep coming while the broker is away, longer than the consumer
                    # groups' session timeout (6 s), so the groups must be rebuilt.
                    await asyncio.sleep(OUTAGE_S)
                    broker.start()
                    back = asyncio.get_running_loop().time()
                    await eventually(
                        lambda: loaders.answered(stopped_at + AFTER),
                        "orders after the restart",
                        180,
                    )
                finally:
                    await loaders.stop()

                settled = await settle(exchange.runtime, timeout_s=180)
                runtime = exchange.runtime
                live = {
                    name: {p: runtime.running[name].partition_hash(p) for p in range(PARTITIONS)}
                    for name in ("risk", "matching")
                }
                await every_accepted_order_settled_once(runtime, load)
                await balances_add_up(clients, runtime)
                report = await audit(
                    runtime.store, default_catalogue(), runtime.topics.market_partitions
                )
                assert report.discrepancies == [], [str(d) for d in report.discrepancies]
                assert report.trades > 0

            # After the clean stop: a fresh single-process replay of each input topic gives
            # the state the live stages ended with (and stored in their last snapshots).
            runtime = await ExchangeRuntime.open(settings)
            try:
                replayed = await assert_stages_match_replay(runtime, PARTITIONS, settled)
            finally:
                await runtime.close()
            assert replayed == live
    assert broker.starts == 2
    # Every loader had a request in flight while the broker was away, answered after.
    during = [span for span in load.spans if span[0] < back and span[1] > away]
    assert len(during) >= len(BUYERS) + len(PROVIDERS), during
    print(
        f"\nbroker restart: {load.answered()} orders answered ({len(load.accepted)} accepted, "
        f"{len(load.rejected)} rejected), {len(during)} in flight while the broker was "
        f"away, {load.retries} retries, answers {dict(load.answers)}, "
        f"{report.trades} trades, {report.events} events, "
        f"{time.monotonic() - started:.0f}s"
    )
