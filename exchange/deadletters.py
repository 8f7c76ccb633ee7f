"""Dead letters: records a stage could not decode or apply, kept with the reason and source.

A stage that meets such a record writes it to the dead-letter topic (one partition, in the
order met) and goes on. Operators list them with `cx deadletters list` and, once the cause is
fixed, append one again to its source partition with `cx deadletters replay SOURCE`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson

from exchange.log import CommandLog, LogProducer, LogRecord, TopicPartition


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record a stage set aside."""

    source: str
    """topic:partition:offset of the original record."""
    stage: str
    reason: str
    value: bytes
    ts: int
    """Log time of the original record."""


def source_of(record: LogRecord) -> str:
    """`topic:partition:offset` of a record."""
    return f"{record.topic}:{record.partition}:{record.offset}"


async def send_dead_letter(
    producer: LogProducer, topic: str, record: LogRecord, stage: str, reason: str
) -> None:
    """Queue a record for the dead-letter topic (durable once the producer flushes)."""
    document = {
        "source": source_of(record),
        "stage": stage,
        "reason": reason,
        "value": base64.b64encode(record.value).decode(),
        "ts": record.timestamp_ms,
    }
    await producer.send(topic, 0, orjson.dumps(document))


async def read_dead_letters(log: CommandLog, topic: str) -> list[DeadLetter]:
    """Every dead letter, once each (a stage that restarts may set a record aside again)."""
    consumer = await log.consumer()
    partition = TopicPartition(topic, 0)
    letters: dict[str, DeadLetter] = {}
    try:
        consumer.assign([partition])
        consumer.seek(partition, 0)
        end = await consumer.end_offset(partition)
        while await consumer.position(partition) < end:
            for record in await consumer.getmany(timeout_ms=1000, max_records=5000):
                document = orjson.loads(record.value)
                letters.setdefault(
                    document["source"],
                    DeadLetter(
                        document["source"],
                        document["stage"],
                        document["reason"],
                        base64.b64decode(document["value"]),
                        document["ts"],
                    ),
                )
    finally:
        await consumer.close()
    return list(letters.values())


async def replay_dead_letter(log: CommandLog, letter: DeadLetter) -> LogRecord:
    """Append the original record again to its source partition; returns the new record."""
    topic, partition, _ = letter.source.rsplit(":", 2)
    producer = await log.producer()
    try:
        return await producer.send_and_wait(topic, int(partition), letter.value)
    finally:
        await producer.close()
