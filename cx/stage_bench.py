"""`cx bench stages`: the risk and matching stages' own work per command, without a log.

The end-to-end bench's saturated flow (the same funded accounts and the same seeded orders,
`cx.bench`) is run through the stages' runners in memory: risk's `_process` over a poll of the
commands topic, matching's over a poll of the orders topic, what matching feeds back to the
commands topic read by risk's next poll, until nothing is left. A first pass records the
records each stage reads in each poll; the timed passes feed fresh runners those polls and
count each stage's CPU (decode, the stage, encode of its outputs), so two versions of the code
are compared on the same input. The Kafka client's own work (fetching, batching, the network)
is not in it: `cx bench e2e` measures the whole process. `outputs_digest` is a hash of every
record the stages wrote, topic, partition and bytes: two versions of the code must give the
same digest.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from cx.bench import ACCOUNTS, PARTITIONS, _orders
from exchange.adapters.inprocess_log import InProcessLog
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import Command, DepositCapacity, DepositFunds, encode
from exchange.log import LogRecord
from exchange.pipeline import (
    POLL_MAX_RECORDS,
    MatchingRunner,
    RiskRunner,
    StageRunner,
    Topics,
    routing_key,
)

_FIRST_TS = 1_767_225_600_000
"""The log time of the first record (1 January 2026, CST midnight less 8 hours)."""
_TICK_MS = 1
"""Log time between two records appended to a partition."""

Poll = list[LogRecord]


class _Topic:
    """One topic's partitions in memory, read from a position per partition as a poll does."""

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.records: list[list[LogRecord]] = [[] for _ in range(partitions)]
        self.read = [0] * partitions

    def append(self, partition: int, value: bytes) -> None:
        held = self.records[partition]
        offset = len(held)
        held.append(
            LogRecord(self.name, partition, offset, _FIRST_TS + offset * _TICK_MS, None, value)
        )

    def poll(self, most: int) -> Poll:
        """Up to `most` unread records, a partition's in a run as Kafka's fetches give them."""
        polled: Poll = []
        for partition, held in enumerate(self.records):
            start = self.read[partition]
            taken = held[start : start + most - len(polled)]
            polled += taken
            self.read[partition] = start + len(taken)
        return polled


def _runners(topics: Topics) -> tuple[RiskRunner, MatchingRunner]:
    log = InProcessLog()
    catalogue = default_catalogue()
    risk = RiskRunner(log, topics, catalogue)
    matching = MatchingRunner(log, topics, catalogue)
    _hold_every_partition(risk, topics.command_partitions)
    _hold_every_partition(matching, topics.market_partitions)
    return risk, matching


def _hold_every_partition(runner: StageRunner[Any], partitions: int) -> None:
    """Give the runner fresh state for each partition, live from offset 0."""
    for partition in range(partitions):
        runner.instances[partition] = runner.new_instance(partition)
        runner._replay_until[partition] = 0
        runner._since_snapshot[partition] = 0


def _funding() -> list[Command]:
    """The deposits of `cx bench e2e`: cash and capacity in every contract for each account."""
    funding: list[Command] = []
    symbols = default_catalogue().symbols
    for n in range(ACCOUNTS):
        account = f"acct-{n}"
        funding.append(DepositFunds(deposit_id=f"f{n}", account_id=account, amount=10**13))
        funding += [
            DepositCapacity(deposit_id=f"c{n}-{s}", account_id=account, symbol=s, quantity=10**9)
            for s in symbols
        ]
    return funding


Polls = tuple[list[Poll], list[Poll]]
"""The polls of risk and of matching, each stage's in the order it read them."""


def record_polls(commands: int, seed: int) -> tuple[Polls, Polls, str]:
    """The polls risk and matching read running the funding to its end, then the orders, and
    the digest of every record the stages wrote."""
    topics = Topics.named("bench", PARTITIONS, PARTITIONS)
    risk, matching = _runners(topics)
    log = {
        name: _Topic(name, partitions)
        for name, partitions in (
            (topics.commands, topics.command_partitions),
            (topics.orders, topics.market_partitions),
            (topics.events, topics.market_partitions),
            (topics.dayahead, 1),
        )
    }
    digest = hashlib.sha256()

    def deliver(runner: StageRunner[Any]) -> None:
        outbox, runner._outbox = runner._outbox, {}
        for (topic, partition), values in outbox.items():
            digest.update(f"{topic}:{partition}:{len(values)}\n".encode())
            for value in values:
                digest.update(value)
                log[topic].append(partition, value)

    def run_to_end(sent: list[Command]) -> Polls:
        for command in sent:
            partition = topics.command_partition(routing_key(command))
            log[topics.commands].append(partition, encode(command))
        polls: Polls = ([], [])
        while True:
            moved = False
            for runner, topic, stage_polls in (
                (risk, topics.commands, polls[0]),
                (matching, topics.orders, polls[1]),
            ):
                polled = log[topic].poll(POLL_MAX_RECORDS)
                if polled:
                    moved = True
                    runner._process(polled)
                    deliver(runner)
                    stage_polls.append(polled)
            if not moved:
                return polls

    funding = run_to_end(_funding())
    flow = run_to_end(list(_orders(commands, seed)))
    return funding, flow, digest.hexdigest()


def _timed(runner: StageRunner[Any], untimed: list[Poll], timed: list[Poll]) -> float:
    """CPU seconds of the runner processing the `timed` polls after the `untimed` ones; its
    outputs are dropped as they would be sent, a poll's at a time."""
    for polled in untimed:
        runner._process(polled)
        runner._outbox.clear()
    started = time.process_time()
    for polled in timed:
        runner._process(polled)
        runner._outbox.clear()
    return time.process_time() - started


def run(commands: int, seed: int, repeats: int = 3) -> str:
    """Run the bench; its JSON line. Per stage, the best of `repeats` timed passes over the
    orders (the funding is processed first, untimed), in µs of CPU per order sent, as `cx
    bench e2e` counts per command settled."""
    funding, flow, digest = record_polls(commands, seed)
    risk_best = matching_best = float("inf")
    for _ in range(repeats):
        risk, matching = _runners(Topics.named("bench", PARTITIONS, PARTITIONS))
        # Each stage's state depends on its own input only, so each runs its polls alone.
        risk_best = min(risk_best, _timed(risk, funding[0], flow[0]))
        matching_best = min(matching_best, _timed(matching, funding[1], flow[1]))
    return json.dumps(
        {
            "bench": "stages",
            "commands": commands,
            "risk_records": sum(map(len, flow[0])),
            "matching_records": sum(map(len, flow[1])),
            "risk_cpu_us_per_command": round(risk_best * 1e6 / commands, 1),
            "matching_cpu_us_per_command": round(matching_best * 1e6 / commands, 1),
            "outputs_digest": digest,
        }
    )
