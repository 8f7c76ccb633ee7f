"""The Kafka command log: the contract against a real broker, plus Kafka-only checks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: TID251
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: TID251
from pydantic import ValidationError

from cx.settings import Settings
from exchange.adapters.kafka_log import KafkaLog
from exchange.log import CommandLog, LogError
from tests.contract.command_log import CommandLogContract, GroupContract, LogFactory

TOPIC_CONFIG_SOURCE = 1
"""DescribeConfigs' source of a value set on the topic itself (DYNAMIC_TOPIC_CONFIG)."""


async def delete_topics(bootstrap_servers: str, *topics: str) -> None:
    """Delete `topics`, those that exist, so test runs do not pile up topics on the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="cx-tests")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [topic for topic in topics if topic in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


@pytest.mark.kafka
class TestKafkaLog(CommandLogContract, GroupContract):
    """The contract on a real broker: every new connection is a new KafkaLog."""

    @pytest.fixture
    def log_factory(self, kafka_bootstrap: str) -> LogFactory:
        async def factory() -> CommandLog:
            return KafkaLog(kafka_bootstrap, client_id="cx-contract")

        return factory

    @pytest.fixture
    async def topic(self, kafka_bootstrap: str) -> AsyncIterator[str]:
        name = f"contract-{uuid.uuid4().hex}"
        yield name
        await delete_topics(kafka_bootstrap, name)

    async def test_an_existing_topic_without_log_append_time_is_refused(
        self, kafka_bootstrap: str, log: CommandLog, topic: str
    ) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="cx-tests")
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()

        with pytest.raises(LogError, match="LogAppendTime"):
            await log.create_topic(topic, 1)


async def test_an_unreachable_broker_raises_log_error() -> None:
    log = KafkaLog("127.0.0.1:9")
    try:
        with pytest.raises(LogError):
            await log.partitions("anything")
    finally:
        await log.close()


def test_more_insync_replicas_than_replicas_is_refused() -> None:
    with pytest.raises(LogError, match=r"min\.insync\.replicas must be from 1 to the replication"):
        KafkaLog("127.0.0.1:9", replication_factor=1, min_insync_replicas=2)


def test_settings_refuse_more_insync_replicas_than_replicas(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot exceed CX_KAFKA_REPLICATION_FACTOR"):
        Settings(
            CX_DATA_DIR=tmp_path, CX_KAFKA_REPLICATION_FACTOR=1, CX_KAFKA_MIN_INSYNC_REPLICAS=2
        )


@pytest.mark.kafka
async def test_topics_carry_the_configured_min_insync_replicas(kafka_bootstrap: str) -> None:
    topic = f"durability-{uuid.uuid4().hex}"
    log = KafkaLog(kafka_bootstrap, replication_factor=1, min_insync_replicas=1)
    try:
        await log.create_topic(topic, 2)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="cx-tests")
        await admin.start()
        try:
            resource = ConfigResource(ConfigResourceType.TOPIC, topic, None)
            [response] = await admin.describe_configs([resource])
            [found] = response.to_object()["resources"]
            entries = {e["config_names"]: e for e in found["config_entries"]}
            [described] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        # Set on the topic itself (not the broker's default): a cluster's 2 would apply as well.
        assert entries["min.insync.replicas"]["config_value"] == "1"
        assert entries["min.insync.replicas"]["config_source"] == TOPIC_CONFIG_SOURCE
        assert [len(p["replicas"]) for p in described["partitions"]] == [1, 1]
    finally:
        await log.close()
        await delete_topics(kafka_bootstrap, topic)
