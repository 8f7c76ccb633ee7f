"""The command log on Apache Kafka through aiokafka.

Topics are created with ``message.timestamp.type=LogAppendTime`` so that a record's time is the
broker's, as the port requires; a log given a clock instead creates them with ``CreateTime``
and stamps each record with the clock as it is produced (simulations and tests that must reach
a delivery hour). Topics get the log's replication factor and ``min.insync.replicas`` (1 and 1
for a single broker; 3 and 2 on a cluster, so that a record acknowledged to an ``acks=all``
producer is on two brokers and one broker may be lost for good). Producers are idempotent with
``acks=all`` (a send retried after a lost answer is not stored twice); consumers use manual
assignment, no auto-commit, and start each partition from the group's committed offset or else
the earliest one.

aiokafka's clients ask for metadata with topic auto-creation allowed, so on a broker with
``auto.create.topics.enable=true`` a typo would create a topic. Every topic and partition is
therefore checked against the cluster's metadata (without auto-creation) before a client touches
it, and an unknown one raises `LogError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

# This module is the Kafka adapter: the one place the ban on aiokafka is lifted.
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener  # noqa: TID251
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: TID251
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: TID251
from aiokafka.errors import (  # noqa: TID251
    CommitFailedError,
    ConsumerStoppedError,
    IllegalGenerationError,
    IllegalOperation,
    KafkaError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
    for_code,
)
from aiokafka.producer.message_accumulator import BatchBuilder  # noqa: TID251
from aiokafka.structs import TopicPartition as KafkaPartition  # noqa: TID251

from exchange.log import (
    CommandLog,
    LogConsumer,
    LogError,
    LogProducer,
    LogRecord,
    RebalancedError,
    RebalanceListener,
    TopicPartition,
)

__all__ = ["KafkaLog"]

_log = logging.getLogger(__name__)

_TIMESTAMP_TYPE = "message.timestamp.type"
_LOG_APPEND_TIME = "LogAppendTime"
_CREATE_TIME = "CreateTime"
_MIN_INSYNC_REPLICAS = "min.insync.replicas"
# Commit refusals that mean the group moved on: another member may hold the partitions.
_REBALANCED = (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
# Errors aiokafka raises that are not KafkaError subclasses.
_CLIENT_ERRORS = (KafkaError, ConsumerStoppedError, IllegalOperation)


class KafkaLog(CommandLog):
    """A connection to a Kafka cluster."""

    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str = "cx",
        *,
        replication_factor: int = 1,
        min_insync_replicas: int = 1,
        linger_ms: int = 5,
        ready_timeout_s: float = 30.0,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 500,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        # A clock of the caller's (simulations, tests that reach a delivery hour) stamps each
        # record as it is produced, on topics that keep the producer's time; by default the
        # broker stamps the append.
        self._clock_ms = clock_ms
        self._timestamp_type = _LOG_APPEND_TIME if clock_ms is None else _CREATE_TIME
        self._client_id = client_id
        if not 1 <= min_insync_replicas <= replication_factor:
            raise LogError(
                f"min.insync.replicas must be from 1 to the replication factor "
                f"{replication_factor}, not {min_insync_replicas}"
            )
        self._replication_factor = replication_factor
        self._min_insync_replicas = min_insync_replicas
        self._linger_ms = linger_ms
        self._ready_timeout_s = ready_timeout_s
        # A group notices a member that died without leaving after the session timeout, and
        # the others learn of a rebalance at their next heartbeat: keep both short.
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = asyncio.Lock()
        self._partition_counts: dict[str, int] = {}
        self._clients: set[_KafkaProducer | _KafkaConsumer] = set()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise LogError("the log is closed")

    async def _admin_client(self) -> AIOKafkaAdminClient:
        self._check_open()
        async with self._admin_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self._bootstrap_servers, client_id=self._client_id
                )
                try:
                    await admin.start()
                except KafkaError as exc:
                    await admin.close()
                    raise LogError(f"cannot reach Kafka at {self._bootstrap_servers}") from exc
                self._admin = admin
            return self._admin

    async def _topics(self) -> dict[str, dict[str, Any]]:
        """Metadata of every topic, asked for without auto-creation."""
        admin = await self._admin_client()
        try:
            topics = await admin.describe_topics()
        except KafkaError as exc:
            raise LogError("cannot read the cluster's metadata") from exc
        return {entry["topic"]: entry for entry in topics}

    async def _check_partition(self, topic: str, partition: int) -> None:
        count = self._partition_counts.get(topic)
        if count is None or not 0 <= partition < count:
            # Unknown here, or partitions were added since: ask the cluster once.
            count = await self.partitions(topic)
        if not 0 <= partition < count:
            raise LogError(f"{topic!r} has no partition {partition}")

    async def _wait_until_ready(self, topic: str, partitions: int) -> None:
        """Wait until every partition of `topic` has a leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout_s
        while True:
            entry = (await self._topics()).get(topic)
            if (
                entry is not None
                and entry["error_code"] == 0
                and len(entry["partitions"]) == partitions
                and all(p["error_code"] == 0 and p["leader"] >= 0 for p in entry["partitions"])
            ):
                return
            if loop.time() > deadline:
                raise LogError(f"topic {topic!r} has no leader for every partition yet")
            await asyncio.sleep(0.05)

    async def _check_timestamp_type(self, topic: str) -> None:
        admin = await self._admin_client()
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {_TIMESTAMP_TYPE: None})
        try:
            responses = await admin.describe_configs([resource])
        except KafkaError as exc:
            raise LogError(f"cannot read the configuration of topic {topic!r}") from exc
        for response in responses:
            for found in response.to_object()["resources"]:
                for entry in found["config_entries"]:
                    if entry["config_names"] == _TIMESTAMP_TYPE:
                        if entry["config_value"] != self._timestamp_type:
                            raise LogError(
                                f"topic {topic!r} exists with {_TIMESTAMP_TYPE}="
                                f"{entry['config_value']}; the log needs {self._timestamp_type}"
                            )
                        return
        raise LogError(f"cannot read {_TIMESTAMP_TYPE} of topic {topic!r}")

    def _topic_configs(self) -> dict[str, str]:
        durability = {_MIN_INSYNC_REPLICAS: str(self._min_insync_replicas)}
        if self._clock_ms is None:
            return {_TIMESTAMP_TYPE: _LOG_APPEND_TIME, **durability}
        # The caller's clock may run ahead of the broker's (a simulated day next year): the
        # broker must not refuse timestamps far from its own time.
        return {
            **durability,
            _TIMESTAMP_TYPE: _CREATE_TIME,
            "message.timestamp.after.max.ms": str(2**63 - 1),
            "message.timestamp.before.max.ms": str(2**63 - 1),
        }

    async def create_topic(self, topic: str, partitions: int) -> None:
        """Create `topic` with `partitions`; a topic that already has that many is left alone."""
        if partitions < 1:
            raise LogError(f"a topic needs at least one partition, not {partitions}")
        admin = await self._admin_client()
        new_topic = NewTopic(
            topic,
            partitions,
            self._replication_factor,
            topic_configs=self._topic_configs(),
        )
        try:
            response = await admin.create_topics([new_topic])
        except KafkaError as exc:
            raise LogError(f"cannot create topic {topic!r}") from exc
        for entry in response.to_object()["topic_errors"]:
            code = entry["error_code"]
            if code == TopicAlreadyExistsError.errno:
                existing = await self.partitions(topic)
                if existing != partitions:
                    raise LogError(
                        f"topic {topic!r} exists with {existing} partitions, not {partitions}"
                    )
                await self._check_timestamp_type(topic)
            elif code != 0:
                error = for_code(code)(entry.get("error_message"))
                raise LogError(f"cannot create topic {topic!r}: {error}") from error
        await self._wait_until_ready(topic, partitions)
        self._partition_counts[topic] = partitions

    async def partitions(self, topic: str) -> int:
        """How many partitions `topic` has; LogError if it does not exist."""
        entry = (await self._topics()).get(topic)
        if entry is None or entry["error_code"] != 0:
            raise LogError(f"unknown topic {topic!r}")
        count = len(entry["partitions"])
        self._partition_counts[topic] = count
        return count

    async def producer(self) -> LogProducer:
        """A started idempotent producer."""
        self._check_open()
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise LogError(f"cannot reach Kafka at {self._bootstrap_servers}") from exc
        wrapper = _KafkaProducer(self, producer)
        self._clients.add(wrapper)
        return wrapper

    async def consumer(self, group_id: str | None = None) -> LogConsumer:
        """A started consumer; `group_id` None means it cannot commit."""
        self._check_open()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise LogError(f"cannot reach Kafka at {self._bootstrap_servers}") from exc
        wrapper = _KafkaConsumer(self, consumer, group_id)
        self._clients.add(wrapper)
        return wrapper

    async def close(self) -> None:
        """Close every producer and consumer this log opened, then the admin client."""
        if self._closed:
            return
        failure: LogError | None = None
        for client in list(self._clients):
            try:
                await client.close()
            except LogError as exc:
                failure = failure or exc
        self._closed = True
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        if failure is not None:
            raise failure


class _KafkaProducer(LogProducer):
    """Sends without waiting for delivery; `flush` waits for every delivery and reports failures."""

    def __init__(self, log: KafkaLog, producer: AIOKafkaProducer) -> None:
        self._log = log
        self._producer = producer
        # Deliveries not yet known to have succeeded; a failed one stays until `flush` reports it.
        self._pending: set[asyncio.Future[Any]] = set()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise LogError("the producer is closed")

    def _delivered(self, delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled() or delivery.exception() is None:
            self._pending.discard(delivery)

    async def _enqueue(
        self, topic: str, partition: int, value: bytes, key: bytes | None
    ) -> asyncio.Future[Any]:
        self._check_open()
        await self._log._check_partition(topic, partition)
        try:
            clock = self._log._clock_ms
            delivery: asyncio.Future[Any] = await self._producer.send(
                topic,
                value,
                key=key,
                partition=partition,
                timestamp_ms=None if clock is None else clock(),
            )
        except KafkaError as exc:
            raise LogError(f"cannot send to {topic!r} partition {partition}") from exc
        return delivery

    async def send(
        self, topic: str, partition: int, value: bytes, key: bytes | None = None
    ) -> None:
        """Queue a record; it is durable once `flush` returns."""
        delivery = await self._enqueue(topic, partition, value, key)
        self._pending.add(delivery)
        delivery.add_done_callback(self._delivered)

    async def send_many(self, topic: str, partition: int, values: Sequence[bytes]) -> None:
        """Queue records for one partition, in this order; durable once `flush` returns.

        The records go in as few batches as fit aiokafka's batch size, each one future and one
        enqueue instead of one per record (this took a quarter to a third off the risk and
        matching stages' CPU per command). A batch is closed as it is queued, so it is sent
        without lingering: the caller queues a whole processed poll's outputs at once.
        """
        self._check_open()
        await self._log._check_partition(topic, partition)
        clock = self._log._clock_ms
        batch = self._producer.create_batch()
        for value in values:
            timestamp = None if clock is None else clock()
            if batch.append(key=None, value=value, timestamp=timestamp) is None:
                await self._send_batch(batch, topic, partition)
                batch = self._producer.create_batch()
                if batch.append(key=None, value=value, timestamp=timestamp) is None:
                    raise LogError(f"a record of {len(value)} bytes does not fit in a batch")
        if batch.record_count():
            await self._send_batch(batch, topic, partition)

    async def _send_batch(self, batch: BatchBuilder, topic: str, partition: int) -> None:
        batch.close()
        try:
            delivery: asyncio.Future[Any] = await self._producer.send_batch(
                batch, topic, partition=partition
            )
        except KafkaError as exc:
            raise LogError(f"cannot send to {topic!r} partition {partition}") from exc
        self._pending.add(delivery)
        delivery.add_done_callback(self._delivered)

    async def send_and_wait(
        self, topic: str, partition: int, value: bytes, key: bytes | None = None
    ) -> LogRecord:
        """Append one record and return it with its offset and log timestamp."""
        delivery = await self._enqueue(topic, partition, value, key)
        try:
            metadata = await delivery
        except KafkaError as exc:
            raise LogError(f"{topic!r} partition {partition} did not store a record") from exc
        return LogRecord(topic, partition, metadata.offset, metadata.timestamp, key, value)

    async def flush(self) -> None:
        """Wait until every queued record is stored; LogError if one was not."""
        self._check_open()
        await self._flush()

    async def _flush(self) -> None:
        try:
            await self._producer.flush()
        except KafkaError as exc:
            raise LogError("queued records were not stored") from exc
        deliveries = list(self._pending)
        self._pending.clear()
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise LogError("a queued record was not stored") from result

    async def close(self) -> None:
        """Flush and release the producer."""
        if self._closed:
            return
        self._closed = True
        self._log._clients.discard(self)
        try:
            await self._flush()
        finally:
            await self._producer.stop()


# aiokafka ships no type information, so its listener base is Any to mypy.
class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Keeps the wrapper's view of its partitions current and forwards to the port's listener."""

    def __init__(self, consumer: _KafkaConsumer, listener: RebalanceListener) -> None:
        self._consumer = consumer
        self._listener = listener

    async def on_partitions_revoked(self, revoked: Iterable[KafkaPartition]) -> None:
        partitions = {TopicPartition(tp.topic, tp.partition) for tp in revoked}
        if not partitions:
            # aiokafka reports an empty revocation before a member's first assignment.
            return
        await self._listener.partitions_revoked(partitions)
        for tp in partitions:
            self._consumer._assignment.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[KafkaPartition]) -> None:
        partitions = {TopicPartition(tp.topic, tp.partition) for tp in assigned}
        self._consumer._assignment = dict.fromkeys(sorted(partitions))
        await self._listener.partitions_assigned(partitions)


class _KafkaConsumer(LogConsumer):
    """An aiokafka consumer with manual assignment, checked against the cluster's metadata."""

    def __init__(self, log: KafkaLog, consumer: AIOKafkaConsumer, group_id: str | None) -> None:
        self._log = log
        self._consumer = consumer
        self._group_id = group_id
        self._assignment: dict[TopicPartition, None] = {}
        # `assign` and `seek` are synchronous in the port, but the partitions must be checked
        # against the cluster first; both are applied on the next asynchronous call.
        self._unapplied = False
        self._seeks: dict[TopicPartition, int] = {}
        self._subscription: tuple[str, ...] = ()
        self._listener: RebalanceListener | None = None
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise LogError("the consumer is closed")
        self._log._check_open()

    def _check_assigned(self, partition: TopicPartition) -> None:
        if partition not in self._assignment:
            raise LogError(f"{partition} is not assigned to this consumer")

    async def _apply(self) -> None:
        self._check_open()
        if not self._unapplied:
            return
        if self._subscription:
            for topic in self._subscription:
                await self._log._check_partition(topic, 0)
            if self._listener is None:
                raise LogError("the consumer has a subscription but no rebalance listener")
            try:
                self._consumer.subscribe(
                    list(self._subscription), listener=_Rebalance(self, self._listener)
                )
            except KafkaError as exc:
                raise LogError("cannot subscribe") from exc
            self._unapplied = False
            return
        for tp in self._assignment:
            await self._log._check_partition(tp.topic, tp.partition)
        try:
            self._consumer.assign([KafkaPartition(*tp) for tp in self._assignment])
            for tp, offset in self._seeks.items():
                self._consumer.seek(KafkaPartition(*tp), offset)
        except KafkaError as exc:
            raise LogError("cannot assign partitions") from exc
        self._unapplied = False
        self._seeks.clear()

    def subscribe(self, topics: Sequence[str], listener: RebalanceListener) -> None:
        """Share the partitions of `topics` with the other members of this consumer's group."""
        self._check_open()
        self._check_group()
        if self._assignment or self._subscription:
            raise LogError("this consumer already reads partitions; use a new consumer")
        self._subscription = tuple(dict.fromkeys(topics))
        self._listener = listener
        self._unapplied = True

    async def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads now."""
        self._check_open()
        return set(self._assignment)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions, each from its committed offset or else offset 0."""
        self._check_open()
        if self._subscription:
            raise LogError("this consumer is subscribed; its group assigns its partitions")
        self._assignment = dict.fromkeys(TopicPartition(*tp) for tp in partitions)
        self._unapplied = True
        self._seeks.clear()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make `offset` the next record read from `partition`."""
        self._check_open()
        self._check_assigned(partition)
        if offset < 0:
            raise LogError(f"offset {offset} is negative")
        if self._unapplied:
            self._seeks[TopicPartition(*partition)] = offset
            return
        try:
            self._consumer.seek(KafkaPartition(*partition), offset)
        except KafkaError as exc:
            raise LogError(f"cannot seek {partition}") from exc

    async def getmany(self, timeout_ms: int = 100, max_records: int = 500) -> list[LogRecord]:
        """Return the next records of the assigned partitions, waiting up to `timeout_ms`."""
        await self._apply()
        if not self._assignment and not self._subscription:
            # Without an assignment aiokafka would wait for one past the timeout; nothing can
            # arrive, so wait out the timeout here.
            await asyncio.sleep(timeout_ms / 1000)
            return []
        try:
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except _CLIENT_ERRORS as exc:
            raise LogError("cannot read from Kafka") from exc
        return [
            LogRecord(
                message.topic,
                message.partition,
                message.offset,
                message.timestamp,
                message.key,
                b"" if message.value is None else message.value,
            )
            for messages in batches.values()
            for message in messages
        ]

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record this consumer will read from `partition`."""
        self._check_assigned(partition)
        await self._apply()
        try:
            position: int = await self._consumer.position(KafkaPartition(*partition))
        except KafkaError as exc:
            raise LogError(f"cannot find the position of {partition}") from exc
        return position

    def _check_group(self) -> None:
        if self._group_id is None:
            raise LogError("a consumer without a group id cannot commit")

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store, for this consumer's group, the next offset to read per partition."""
        self._check_group()
        for tp in offsets:
            if self._subscription and tp not in self._assignment:
                raise RebalancedError(f"{tp} was taken away by a rebalance")
            self._check_assigned(tp)
        await self._apply()
        try:
            await self._consumer.commit(
                {KafkaPartition(*tp): offset for tp, offset in offsets.items()}
            )
        except _REBALANCED as exc:
            raise RebalancedError("the group rebalanced; the commit was refused") from exc
        except _CLIENT_ERRORS as exc:
            raise LogError("cannot commit offsets") from exc

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed next offset for `partition`, or None if nothing is committed."""
        self._check_open()
        self._check_group()
        await self._log._check_partition(partition.topic, partition.partition)
        try:
            offset: int | None = await self._consumer.committed(KafkaPartition(*partition))
        except _CLIENT_ERRORS as exc:
            raise LogError(f"cannot read the committed offset of {partition}") from exc
        return offset

    async def end_offset(self, partition: TopicPartition) -> int:
        """The offset the next appended record will get (the high-water mark)."""
        self._check_open()
        await self._log._check_partition(partition.topic, partition.partition)
        tp = KafkaPartition(*partition)
        try:
            offsets = await self._consumer.end_offsets([tp])
        except KafkaError as exc:
            raise LogError(f"cannot read the end offset of {partition}") from exc
        end: int = offsets[tp]
        return end

    async def close(self) -> None:
        """Release the consumer."""
        if self._closed:
            return
        self._closed = True
        self._log._clients.discard(self)
        try:
            await self._consumer.stop()
        except asyncio.CancelledError:
            # aiokafka 0.14 lets the cancellation of its own internal task escape when a
            # consumer without a group stops before that task first ran; only a cancellation
            # of the caller's task may propagate.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
