"""The Kafka command log: the contract against a real broker, plus Kafka-only checks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: TID251

from exchange.adapters.kafka_log import KafkaLog
from exchange.log import CommandLog, LogError
from tests.contract.command_log import CommandLogContract, GroupContract, LogFactory


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
