"""A Kafka broker lost for good under load: the load goes on, nothing is lost or doubled.

The exchange (risk, matching, settlement, market data and the API, in this process) runs on the
three-node cluster of `make failover`, its topics replicated three times with
min.insync.replicas=2, its producers idempotent with acks=all. Buyers and providers place
orders through the API at a steady pace (tests/e2e/steady_load.py). Mid-run the node leading
most of the exchange's partitions is killed (SIGKILL) and its data deleted; orders keep being
accepted on the two left. Then a new node takes its place (an empty store, the lost controller
removed from the quorum and the new one added) and catches up: it is back in every partition's
in-sync replicas. More orders follow with it in place.

Afterwards: every order the API accepted is settled exactly once, no order id was accepted
twice, the audit finds nothing, the balances add up to the deposits, and each stage's state
equals a clean replay of its input topic. The times measured are printed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient  # noqa: TID251
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: TID251

from cx.runtime import ExchangeRuntime
from exchange.domain.catalogue import default_catalogue
from settlement.audit import audit
from tests.conftest import fresh_database
from tests.e2e.harness import (
    assert_stages_match_replay,
    eventually,
    running_exchange,
    settings_for,
    settle,
)
from tests.e2e.steady_load import (
    Load,
    Loaders,
    balances_add_up,
    every_accepted_order_settled_once,
    traders,
)
from tests.failover.conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

PARTITIONS = 3
BEFORE = 40  # orders answered before the node is killed
DURING = 40  # orders answered while two nodes are left
AFTER = 40  # orders answered once the new node is in every in-sync replica set
CATCH_UP_BOUND_S = 120.0


async def _describe(bootstrap: str, prefix: str) -> dict[str, Any]:
    """The exchange's topics: partitions (leader, replicas, in-sync replicas) and each one's
    min.insync.replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="cx-failover")
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        topics = {t["topic"]: t for t in await admin.describe_topics(names)}
        resources = [ConfigResource(ConfigResourceType.TOPIC, t, None) for t in names]
        min_isr: dict[str, str] = {}
        for response in await admin.describe_configs(resources):
            for found in response.to_object()["resources"]:
                for entry in found["config_entries"]:
                    if entry["config_names"] == "min.insync.replicas":
                        min_isr[found["resource_name"]] = entry["config_value"]
    finally:
        await admin.close()
    return {"topics": topics, "min_isr": min_isr}


def _leaders(described: dict[str, Any]) -> Counter[int]:
    return Counter(
        p["leader"] for topic in described["topics"].values() for p in topic["partitions"]
    )


def _all_in_sync(described: dict[str, Any], node: int) -> bool:
    return all(
        node in p["isr"] for topic in described["topics"].values() for p in topic["partitions"]
    )


async def test_a_broker_lost_for_good_loses_and_repeats_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    async with fresh_database(cluster.database_url) as database_url:
        settings = settings_for(
            tmp_path,
            kafka=cluster.kafka,
            database_url=database_url,
            CX_COMMAND_PARTITIONS=PARTITIONS,
            CX_MARKET_PARTITIONS=PARTITIONS,
            CX_SNAPSHOT_EVERY=50,
            # No ticks: each moves matching's clock (in its state hash), so one arriving after
            # settle would make the live hashes read there an earlier state than the replay's.
            CX_TICK_SECONDS=86_400,
            CX_KAFKA_REPLICATION_FACTOR=3,
            CX_KAFKA_MIN_INSYNC_REPLICAS=2,
            # Settlement in one shard: this test is about Kafka (the PostgreSQL one shards).
            CX_SETTLEMENT_SHARDS="",
        )
        load = Load()
        async with running_exchange(settings) as exchange:
            described = await _describe(cluster.kafka, settings.topic_prefix)
            assert len(described["topics"]) >= 4, described["topics"].keys()
            for topic in described["topics"].values():
                assert [len(p["replicas"]) for p in topic["partitions"]] == [3] * len(
                    topic["partitions"]
                ), topic
            assert set(described["min_isr"].values()) == {"2"}, described["min_isr"]

            clients = await traders(exchange)
            loaders = Loaders(load, clients)
            try:
                await eventually(lambda: loaders.answered(BEFORE), "orders before the kill", 120)
                victim = _leaders(
                    await _describe(cluster.kafka, settings.topic_prefix)
                ).most_common(1)[0][0]
                cluster.services("kafka-node", "kill", str(victim))
                killed_at = loop.time()
                at_kill = load.answered()
                await eventually(
                    lambda: loaders.answered(at_kill + DURING), "orders on the two nodes left", 180
                )
                on_two_s = loop.time() - killed_at

                replace_started = loop.time()
                await asyncio.to_thread(cluster.services, "kafka-node", "replace", str(victim))
                replaced_s = loop.time() - replace_started

                async def caught_up() -> bool:
                    return _all_in_sync(
                        await _describe(cluster.kafka, settings.topic_prefix), victim
                    )

                await eventually(caught_up, "the new node in every ISR", CATCH_UP_BOUND_S)
                caught_up_s = loop.time() - replace_started
                at_catch_up = load.answered()
                await eventually(
                    lambda: loaders.answered(at_catch_up + AFTER), "orders with the new node", 180
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

        runtime = await ExchangeRuntime.open(settings)
        try:
            replayed = await assert_stages_match_replay(runtime, PARTITIONS, settled)
        finally:
            await runtime.close()
        assert replayed == live

    # The longest any order waited for its answer from the kill on: the stall clients saw.
    stall_s = max((end - sent for sent, end in load.spans if end > killed_at), default=0.0)
    print(
        f"\nkafka node {victim} lost: {load.answered()} orders answered "
        f"({len(load.accepted)} accepted, {len(load.rejected)} rejected), {load.retries} "
        f"retries, answers {dict(load.answers)}; longest answer after the kill {stall_s:.1f}s, "
        f"{DURING} orders on two nodes in {on_two_s:.1f}s; replacement started in "
        f"{replaced_s:.1f}s, in every ISR {caught_up_s:.1f}s after; {report.trades} trades, "
        f"{report.events} events, {time.monotonic() - started:.0f}s"
    )
