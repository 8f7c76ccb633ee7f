"""The stages of the pipeline, run over the command log port.

    commands (key: account) -> risk -> orders (key: family) -> matching -> events (key: family)
                      ^                                            |
                      +------ fills and cancels, key: account -----+

Risk and matching are pure functions of their one input topic, so a stage restarts by replaying
its input: silently up to its group's committed offset (the outputs of those inputs are already
in the log), then live. Records a restarted stage writes twice carry the same event ids, and
every consumer drops them: a stage by the monotonic input position encoded in the event id
(`Deduplicator`), settlement by the event store's unique event id.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast, get_args

from pydantic import ValidationError

from exchange.domain.accounts import Accounts
from exchange.domain.catalogue import Catalogue, family_of, is_family
from exchange.domain.enterprises import REGISTRY_KEY
from exchange.domain.market import MarketStage
from exchange.domain.messages import (
    MARKET_WIDE_ACTIONS,
    AmendRejected,
    AnyMessage,
    ApplicationInfoRequested,
    ApplicationRejected,
    ApplicationSupplemented,
    ApplyForGrant,
    ApproveGrant,
    BundleDrawn,
    CancelAllRequested,
    Command,
    CommandRejected,
    ControlMarket,
    CreateProgramme,
    DayAheadBidsCollected,
    DeliverySettled,
    EnterpriseRegistered,
    Event,
    EventStamp,
    ExclusiveGroupAccepted,
    FundDiscountPool,
    GrantApplied,
    GrantApproved,
    ListingChanged,
    MarketControlRequested,
    Message,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    RegisterEnterprise,
    RejectApplication,
    RejectReason,
    RequestApplicationInfo,
    ResolveDispute,
    SetVoucherPolicy,
    StripCascaded,
    SupplementApplication,
    TradeExecuted,
    VoucherPolicySet,
    decode,
    encode,
)
from exchange.domain.operators import OperatorSeal
from exchange.domain.risk import OUTCOME_TYPES, Outcome, RiskStage
from exchange.log import (
    CommandLog,
    LogConsumer,
    LogProducer,
    LogRecord,
    RebalancedError,
    TopicPartition,
)
from exchange.snapshots import Snapshot, SnapshotStore, SnapshotStoreUnavailable

log = logging.getLogger(__name__)

COMMANDS = get_args(get_args(Command)[0])
"""Every message type participants may send on the commands topic."""
MESSAGE_TYPES: tuple[type[Message], ...] = get_args(get_args(AnyMessage)[0])
"""Every message type of every topic."""


def kinds(*bases: type) -> frozenset[type]:
    """The message types that are `bases` or derive from them: for a message of the topics,
    `type(m) in kinds(...)` is `isinstance(m, bases)` without the ABC check of pydantic's
    metaclass, about 55 ns a class it is not (a record decided by risk went through some
    thirty)."""
    return frozenset(kind for kind in MESSAGE_TYPES if issubclass(kind, bases))


_COMMAND_KINDS = kinds(*COMMANDS)
_OUTCOME_KINDS = kinds(*OUTCOME_TYPES)
_EVENT_KINDS = kinds(Event)
_FED_BACK_THROUGH_ONE_PARTITION = kinds(
    GrantApproved,
    EnterpriseRegistered,
    VoucherPolicySet,
    GrantApplied,
    ApplicationInfoRequested,
    ApplicationSupplemented,
    ApplicationRejected,
)
"""Risk's decisions that travel through the orders partition of their commands partition."""
_RISK_FANS_OUT = kinds(CancelAllRequested, ExclusiveGroupAccepted, MarketControlRequested)
"""Risk's decisions that may go to more than one orders partition."""
_TOLD_EVERY_RISK_PARTITION = kinds(
    ListingChanged, EnterpriseRegistered, VoucherPolicySet, StripCascaded
)
_DECIDED_ELSEWHERE = kinds(GrantApproved, EnterpriseRegistered, VoucherPolicySet)
"""Inputs of matching decided by one risk partition that the others learn of from matching."""
_OWNER_TOLD = kinds(OrderCancelled, OrderAmended, OrderReduced, AmendRejected, GrantApproved)
_DAY_AHEAD_BIDS = kinds(DayAheadBidsCollected)
_TRADED = kinds(TradeExecuted)
_BOTH_SIDES_TOLD = kinds(DeliverySettled, BundleDrawn)


S = TypeVar("S")

POLL_TIMEOUT_MS = 50
POLL_MAX_RECORDS = 2000
SNAPSHOT_EVERY = 10_000
COMMIT_INTERVAL_S = 0.05
"""How often a stage flushes its outputs and commits its input offsets while busy."""
"""Input records per partition between two snapshots."""


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names and partition counts; orders and events are partitioned alike."""

    commands: str
    orders: str
    events: str
    command_partitions: int
    market_partitions: int
    deadletters: str
    prefix: str
    dayahead: str
    """The day-ahead auction's input: every matching partition's bids at a day's gate."""

    @classmethod
    def named(cls, prefix: str, command_partitions: int, market_partitions: int) -> Topics:
        """Topics `<prefix>.commands`, `.orders`, `.events`, `.deadletters` and `.dayahead`."""
        return cls(
            f"{prefix}.commands",
            f"{prefix}.orders",
            f"{prefix}.events",
            command_partitions,
            market_partitions,
            f"{prefix}.deadletters",
            prefix,
            f"{prefix}.dayahead",
        )

    async def create(self, command_log: CommandLog) -> None:
        """Create the topics if they do not exist."""
        await command_log.create_topic(self.commands, self.command_partitions)
        await command_log.create_topic(self.orders, self.market_partitions)
        await command_log.create_topic(self.events, self.market_partitions)
        await command_log.create_topic(self.deadletters, 1)
        await command_log.create_topic(self.dayahead, 1)

    def group(self, stage: str) -> str:
        """The consumer group of a stage: scoped by the prefix, so exchanges sharing a Kafka
        cluster never join each other's groups."""
        return f"{self.prefix}.{stage}"

    def command_partition(self, account_id: str) -> int:
        """The commands partition of an account."""
        return partition_for(account_id, self.command_partitions)

    def market_partition(self, symbol: str) -> int:
        """The orders and events partition of a contract, or of a family (an operator's band
        for a whole family): every hour of a family together."""
        return self.family_partition(symbol if is_family(symbol) else family_of(symbol))

    def family_partition(self, family: str) -> int:
        """The orders and events partition of a family `CLASS.REGION`."""
        return partition_for(family, self.market_partitions)


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for a key, the same in every process and adapter."""
    return zlib.crc32(key.encode()) % partitions


def routing_key(command: Command) -> str:
    """The commands-topic key: the account whose balances the command touches, an operator's
    id, `programme:ID` for a voucher programme and its applications (its budget lives in one
    partition), or the registry's key for enterprises' registrations and the voucher policy
    (one partition knows every unified social credit code)."""
    if isinstance(
        command,
        CreateProgramme
        | ApproveGrant
        | ApplyForGrant
        | RequestApplicationInfo
        | SupplementApplication
        | RejectApplication
        | FundDiscountPool,
    ):
        return f"programme:{command.programme_id}"
    if isinstance(command, RegisterEnterprise | SetVoucherPolicy):
        return REGISTRY_KEY
    if isinstance(command, ControlMarket | ResolveDispute):
        return command.operator_id
    # An account's limits are enforced by the risk partition that holds the account.
    return command.account_id


class Deduplicator:
    """Drops events already seen, by the input position their id encodes.

    Every event id is `topic:partition:offset:n`. One stage instance owns an input partition at
    a time and writes its events in input order, so among the records of one partition a
    consumer reads, the positions from one source partition only grow, except when a restarted
    stage writes the same events again. The order holds per (partition read, source partition)
    only: records from one source reach different partitions at different times.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[tuple[int, str], tuple[int, int]] = {}

    def snapshot(self) -> list[list[Any]]:
        """The last position seen per (partition read, source), JSON-ready."""
        return [[p, source, o, n] for (p, source), (o, n) in sorted(self._last.items())]

    @classmethod
    def restore(cls, data: list[list[Any]]) -> Deduplicator:
        """The deduplicator a snapshot describes."""
        restored = cls()
        restored._last = {(p, source): (o, n) for p, source, o, n in data}
        return restored

    def is_new(self, read_from: int, event_id: str) -> bool:
        """True the first time an event is seen among the records of partition `read_from`."""
        source, offset, n = event_id.rsplit(":", 2)
        position = (int(offset), int(n))
        key = (read_from, source)
        last = self._last.get(key)
        if last is not None and position <= last:
            return False
        self._last[key] = position
        return True


class StageRunner(ABC, Generic[S]):
    """Runs one stage over its share of one topic, with its own state per partition.

    By default the runner is a member of the stage's consumer group, so several processes
    running the same stage share the partitions and a survivor takes over a dead member's.
    State is kept per input partition: a partition that arrives is rebuilt by replaying it,
    silently up to the group's committed offset (those outputs are already in the log), then
    live; a partition that leaves takes its state with it.
    """

    name: str
    reads: str
    """The name of the `Topics` field this stage reads."""

    def __init__(
        self,
        command_log: CommandLog,
        topics: Topics,
        catalogue: Catalogue,
        partitions: Iterable[int] | None = None,
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = SNAPSHOT_EVERY,
    ) -> None:
        self.topics = topics
        self.catalogue = catalogue
        self.input_topic: str = getattr(topics, self.reads)
        self.group_id = topics.group(self.name)
        self.log = command_log
        self.fixed = (
            None
            if partitions is None
            else [TopicPartition(self.input_topic, p) for p in partitions]
        )
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every
        self.instances: dict[int, S] = {}
        self.caught_up = asyncio.Event()
        self.restored_from: dict[int, int] = {}
        """Per partition, the input offset of the snapshot it was restored from (0: none)."""
        self._replay_until: dict[int, int] = {}
        self._next_offset: dict[int, int] = {}
        self._since_snapshot: dict[int, int] = {}
        self._uncommitted: dict[TopicPartition, int] = {}
        self._commit_due = 0.0
        self._busy = asyncio.Lock()
        self._outbox: dict[tuple[str, int], list[bytes]] = {}
        self._producer: LogProducer | None = None
        self._consumer: LogConsumer | None = None

    @property
    def _running_producer(self) -> LogProducer:
        if self._producer is None:
            raise RuntimeError(f"the {self.name} stage is not running: it has no producer")
        return self._producer

    @property
    def _running_consumer(self) -> LogConsumer:
        if self._consumer is None:
            raise RuntimeError(f"the {self.name} stage is not running: it has no consumer")
        return self._consumer

    @abstractmethod
    def new_instance(self, partition: int) -> S:
        """Fresh state for one input partition."""

    @abstractmethod
    def snapshot_instance(self, partition: int) -> Any:
        """One partition's whole state, JSON-ready."""

    @abstractmethod
    def restore_instance(self, data: Any) -> S:
        """The state a snapshot describes."""

    @abstractmethod
    def _process(self, records: list[LogRecord]) -> None:
        """Apply records of owned partitions in order, queueing outputs of live ones (`_send`)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Process records until `stop` is set."""
        self._producer = await self.log.producer()
        self._consumer = await self.log.consumer(group_id=self.group_id)
        try:
            if self.fixed is None:
                self._consumer.subscribe([self.input_topic], self)
            else:
                self._consumer.assign(self.fixed)
                await self.partitions_assigned(set(self.fixed))
            while not stop.is_set():
                records = await self._consumer.getmany(POLL_TIMEOUT_MS, POLL_MAX_RECORDS)
                async with self._busy:
                    owned = [r for r in records if r.partition in self.instances]
                    if owned:
                        self._process(owned)
                        await self._send_outbox()
                        self._uncommitted.update(_next_offsets(owned))
                        for record in owned:
                            self._since_snapshot[record.partition] += 1
                    loop = asyncio.get_running_loop()
                    if not records or loop.time() >= self._commit_due:
                        await self._commit()
                if not self.caught_up.is_set():
                    async with self._busy:
                        await self._update_caught_up()
            async with self._busy:
                await self._commit()
                for partition in list(self.instances):
                    await self._save_snapshot(partition)
        finally:
            await self._producer.close()
            await self._consumer.close()

    async def _commit(self) -> None:
        """Flush the outputs of what was processed, then commit its offsets (holding `_busy`).

        Committing on an interval rather than per batch saves two round trips a batch; what a
        crash leaves uncommitted is processed again and its outputs dropped as duplicates.
        """
        producer, consumer = self._running_producer, self._running_consumer
        self._commit_due = asyncio.get_running_loop().time() + COMMIT_INTERVAL_S
        if not self._uncommitted:
            return
        await producer.flush()
        offsets, self._uncommitted = self._uncommitted, {}
        try:
            await consumer.commit(offsets)
        except RebalancedError:
            # The partitions are being reassigned; their next holder (perhaps this one again)
            # rebuilds them from snapshot and the committed offset.
            log.warning("%s: commit refused by a rebalance; the next holder redoes it", self.name)
            return
        for tp, offset in offsets.items():
            self._next_offset[tp.partition] = offset
            if self._since_snapshot[tp.partition] >= self.snapshot_every:
                await self._save_snapshot(tp.partition)

    async def _save_snapshot(self, partition: int) -> None:
        """Store the partition's state at its next input offset, if it changed since the last."""
        if self.snapshots is None or not self._since_snapshot.get(partition):
            return
        try:
            await self.snapshots.save(
                Snapshot(
                    self.name,
                    self.input_topic,
                    partition,
                    self._next_offset[partition],
                    self.partition_hash(partition),
                    self.snapshot_instance(partition),
                )
            )
        except SnapshotStoreUnavailable as error:
            # The records stay counted, so the next commit tries again; meanwhile a takeover
            # replays from the previous snapshot, which is slower, never wrong.
            log.warning("%s: partition %d: %s", self.name, partition, error)
            return
        self._since_snapshot[partition] = 0

    async def partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        """Start each new partition's state from scratch and replay it from the beginning."""
        consumer = self._running_consumer
        for tp in sorted(partitions):
            committed = await consumer.committed(tp) or 0
            start = await self._restore(tp, committed)
            self._replay_until[tp.partition] = committed
            self._next_offset[tp.partition] = start
            self._since_snapshot[tp.partition] = 0
            self.restored_from[tp.partition] = start
            consumer.seek(tp, start)
        self.caught_up.clear()
        log.info(
            "%s: now holds partitions %s (restored from offsets %s)",
            self.name,
            sorted(self.instances),
            {p: self.restored_from[p] for p in sorted(self.instances)},
        )

    async def _restore(self, tp: TopicPartition, committed: int) -> int:
        """Install the partition's latest snapshot (or fresh state); return where to read from."""
        saved = None
        if self.snapshots is not None:
            saved = await self.snapshots.latest(self.name, tp.topic, tp.partition, committed)
        if saved is not None:
            self.instances[tp.partition] = self.restore_instance(saved.data)
            if self.partition_hash(tp.partition) == saved.state_hash:
                offset: int = saved.input_offset
                return offset
            log.error(
                "%s: snapshot of %s at %d does not match its hash; replaying from the start",
                self.name,
                tp,
                saved.input_offset,
            )
        self.instances[tp.partition] = self.new_instance(tp.partition)
        return 0

    async def partitions_revoked(self, partitions: set[TopicPartition]) -> None:
        """Drop the state of partitions another member takes over.

        Waits for a batch in progress: its outputs are flushed and its offsets committed
        before the partitions go.
        """
        async with self._busy:
            await self._commit()
            for tp in partitions:
                if tp.partition in self.instances:
                    await self._save_snapshot(tp.partition)
                self.instances.pop(tp.partition, None)
                self._replay_until.pop(tp.partition, None)

    async def _update_caught_up(self) -> None:
        """Set `caught_up` once every held partition is read to its end (call holding `_busy`,
        so a rebalance cannot take a partition away meanwhile)."""
        consumer = self._running_consumer
        for partition, replay_until in list(self._replay_until.items()):
            tp = TopicPartition(self.input_topic, partition)
            position = await consumer.position(tp)
            if position < max(replay_until, await consumer.end_offset(tp)):
                return
        self.caught_up.set()

    def _live(self, record: LogRecord) -> bool:
        return record.offset >= self._replay_until[record.partition]

    def _send(self, topic: str, partition: int, message: Message | bytes) -> None:
        """Queue an output; the outputs of a processed batch are sent together, per partition
        in the order queued (`_send_outbox`)."""
        value = message if isinstance(message, bytes) else encode(message)
        self._outbox.setdefault((topic, partition), []).append(value)

    async def _send_outbox(self) -> None:
        """Send the queued outputs, a partition's records in one call (see `send_many`).

        What is fed back to the commands topic goes first: whoever reads a decision on the
        events topic (the API answering a registration or a grant) then finds the risk
        partitions it concerns already told, so a command sent next is decided knowing it."""
        producer = self._running_producer
        outbox, self._outbox = self._outbox, {}
        feedback_first = sorted(outbox.items(), key=lambda item: item[0][0] != self.topics.commands)
        for (topic, partition), values in feedback_first:
            await producer.send_many(topic, partition, values)

    def state_hash(self) -> str:
        """SHA-256 over the state hash of every partition this runner holds."""
        hasher = hashlib.sha256()
        for partition in sorted(self.instances):
            hasher.update(f"{partition}:{self.partition_hash(partition)}\n".encode())
        return hasher.hexdigest()

    @abstractmethod
    def partition_hash(self, partition: int) -> str:
        """SHA-256 of one partition's state."""


@dataclass
class RiskPartition:
    """The risk stage of one commands partition."""

    stage: RiskStage
    dedup: Deduplicator


class RiskRunner(StageRunner[RiskPartition]):
    """Runs the risk stage over commands partitions."""

    name = "risk"

    reads = "commands"

    def __init__(
        self,
        command_log: CommandLog,
        topics: Topics,
        catalogue: Catalogue,
        partitions: Iterable[int] | None = None,
        snapshots: SnapshotStore | None = None,
        snapshot_every: int = SNAPSHOT_EVERY,
        seal: OperatorSeal | None = None,
    ) -> None:
        super().__init__(command_log, topics, catalogue, partitions, snapshots, snapshot_every)
        self.seal = seal
        """Verifies operator commands (None: every operator command is refused)."""

    def new_instance(self, partition: int) -> RiskPartition:
        """Risk state for the accounts of one commands partition."""
        stage = RiskStage(self.catalogue, self.seal, self.topics.command_partitions)
        return RiskPartition(stage, Deduplicator())

    def snapshot_instance(self, partition: int) -> Any:
        """The partition's risk state and deduplicator, JSON-ready."""
        instance = self.instances[partition]
        return {"stage": instance.stage.snapshot(), "dedup": instance.dedup.snapshot()}

    def restore_instance(self, data: Any) -> RiskPartition:
        """Risk state from a snapshot."""
        return RiskPartition(
            RiskStage.restore(
                self.catalogue, data["stage"], self.seal, self.topics.command_partitions
            ),
            Deduplicator.restore(data["dedup"]),
        )

    def partition_hash(self, partition: int) -> str:
        """The state hash of one partition's risk stage."""
        return self.instances[partition].stage.state_hash()

    def accounts(self) -> Accounts:
        """Every account this runner holds, merged (each account lives in one partition)."""
        merged = Accounts()
        for instance in self.instances.values():
            held = instance.stage.accounts
            merged.cash.update(held.cash)
            merged.capacity.update(held.capacity)
            merged.positions.update(held.positions)
            merged.resale_held.update(held.resale_held)
            merged.ledger.update(held.ledger)
            merged.subsidised.update(held.subsidised)
            merged.concessions.update(held.concessions)
            merged.grants.update(held.grants)
            merged.programmes.update(held.programmes)
            merged.open_orders.update(held.open_orders)
        return merged

    def _process(self, records: list[LogRecord]) -> None:
        for record in records:
            stamp = EventStamp(record.topic, record.partition, record.offset, record.timestamp_ms)
            outputs = self._decide(self.instances[record.partition], record, stamp)
            if not outputs or not self._live(record):
                continue
            for output in outputs:
                if type(output) not in _RISK_FANS_OUT:
                    self._send(self.topics.orders, self._route(output, record), output)
                elif isinstance(output, CancelAllRequested):
                    self._send_kill_switch(output)
                elif isinstance(output, ExclusiveGroupAccepted):
                    # Each alternative to its family's partition, where its book is.
                    for block in output.blocks:
                        self._send(self.topics.orders, self._route(block, record), block)
                elif (
                    isinstance(output, MarketControlRequested)
                    and output.action in MARKET_WIDE_ACTIONS
                ):
                    self._send_to_every_market_partition(output)
                else:
                    self._send(self.topics.orders, self._route(output, record), output)

    def _send_kill_switch(self, requested: CancelAllRequested) -> None:
        """The kill switch to every orders partition holding the account's orders: a copy
        each, with an id of its own (`...:n`, n the partition) and only that partition's
        contracts, so each is stored and a replay cancels each family where its partition
        did."""
        prefix = requested.event_id.rsplit(":", 1)[0]
        by_partition: dict[int, list[str]] = {}
        for symbol in requested.symbols:
            by_partition.setdefault(self.topics.market_partition(symbol), []).append(symbol)
        for partition, symbols in sorted(by_partition.items()):
            copy = requested.model_copy(
                update={"event_id": f"{prefix}:{partition}", "here": symbols}
            )
            self._send(self.topics.orders, partition, copy)

    def _send_to_every_market_partition(self, control: MarketControlRequested) -> None:
        """One copy of a market-wide control to each orders partition, each with an id of its
        own (`...:n`, n the partition): every copy is stored in the event store, in its own
        partition's order, so a replay acts on each contract where its partition did."""
        prefix = control.event_id.rsplit(":", 1)[0]
        for partition in range(self.topics.market_partitions):
            copy = control.model_copy(update={"event_id": f"{prefix}:{partition}"})
            self._send(self.topics.orders, partition, copy)

    def _decide(self, instance: RiskPartition, record: LogRecord, stamp: EventStamp) -> list[Event]:
        """What the stage makes of one record: its decision on a command, or the fee
        concessions it decided folding an outcome fed back from matching."""
        stage = instance.stage
        try:
            message = decode(record.value)
        except ValidationError as error:
            return [stage.reject_malformed(_source(record), _describe(error), stamp)]
        kind = type(message)
        if kind in _OUTCOME_KINDS:
            outcome = cast(Outcome, message)
            if not instance.dedup.is_new(record.partition, outcome.event_id):
                return []
            partition = record.partition
            return list(
                stage.apply_outcome(
                    outcome,
                    lambda account: self.topics.command_partition(account) == partition,
                    stamp,
                )
            )
        if kind in _COMMAND_KINDS:
            return [stage.handle(cast(Command, message), stamp)]
        return [
            stage.reject_malformed(
                _source(record), f"{message.type} is not a command participants may send", stamp
            )
        ]

    def _route(self, event: Event, record: LogRecord) -> int:
        if type(event) in _FED_BACK_THROUGH_ONE_PARTITION:
            # Matching feeds grants back to the enterprise's commands partition, where they
            # are deduplicated by their position in this partition: they must all travel
            # through one orders partition to arrive in that order. An application's steps
            # travel with its grant, so the store keeps them in the order they were decided.
            return record.partition % self.topics.market_partitions
        symbol = getattr(event, "symbol", None)
        if isinstance(symbol, str):
            return self.topics.market_partition(symbol)
        account_id = getattr(event, "account_id", None)
        if isinstance(account_id, str):
            return partition_for(account_id, self.topics.market_partitions)
        return record.partition % self.topics.market_partitions


@dataclass
class MarketPartition:
    """The books of the contract families of one orders partition."""

    stage: MarketStage
    dedup: Deduplicator


class MatchingRunner(StageRunner[MarketPartition]):
    """Runs the matching stage over orders partitions; events go to the same partition."""

    name = "matching"

    reads = "orders"

    def _listed(self, partition: int) -> Catalogue:
        """The static contracts and rolled families of this partition's families."""
        return self.catalogue.subset(
            lambda family: self.topics.family_partition(family) == partition
        )

    def new_instance(self, partition: int) -> MarketPartition:
        """Empty books for the contracts whose family maps to this partition (rolled ones
        are listed as the partition's log time reaches them)."""
        return MarketPartition(MarketStage(self._listed(partition)), Deduplicator())

    def snapshot_instance(self, partition: int) -> Any:
        """The partition's books and deduplicator, JSON-ready."""
        instance = self.instances[partition]
        return {
            "partition": partition,
            "stage": instance.stage.snapshot(),
            "dedup": instance.dedup.snapshot(),
        }

    def restore_instance(self, data: Any) -> MarketPartition:
        """Books from a snapshot."""
        return MarketPartition(
            MarketStage.restore(self._listed(data["partition"]), data["stage"]),
            Deduplicator.restore(data["dedup"]),
        )

    def partition_hash(self, partition: int) -> str:
        """The state hash of one partition's books."""
        return self.instances[partition].stage.state_hash()

    def _process(self, records: list[LogRecord]) -> None:
        events_topic = self.topics.events
        for record in records:
            instance = self.instances[record.partition]
            stamp = EventStamp(record.topic, record.partition, record.offset, record.timestamp_ms)
            try:
                message = decode(record.value)
            except ValidationError as error:
                rejected = CommandRejected(
                    event_id=stamp.next_id(),
                    ts=stamp.ts,
                    reason=RejectReason.MALFORMED,
                    message=_describe(error),
                    source=_source(record),
                )
                if self._live(record):
                    self._send(events_topic, record.partition, rejected)
                continue
            if type(message) not in _EVENT_KINDS:
                continue
            received = cast(Event, message)
            if not instance.dedup.is_new(record.partition, received.event_id):
                continue
            outputs = instance.stage.handle(received, stamp)
            if not self._live(record):
                continue
            recorded = instance.stage.recorded(received, stamp.ts)
            self._send(events_topic, record.partition, recorded)
            if type(received) in _DECIDED_ELSEWHERE:
                # Approved by the programme's risk partition (registered, or set, by the
                # registry's); the grantee's partition (every partition) learns of it here,
                # in its place among the partition's other outcomes.
                for partition in self._partitions_to_notify(received):
                    self._send(self.topics.commands, partition, recorded)
            for event in outputs:
                if type(event) in _DAY_AHEAD_BIDS:
                    event = event.model_copy(update={"partition": record.partition})
                    self._send(self.topics.dayahead, 0, event)
                self._send(events_topic, record.partition, event)
                for partition in self._partitions_to_notify(event):
                    self._send(self.topics.commands, partition, event)

    def _partitions_to_notify(self, event: Event) -> set[int]:
        """Commands partitions whose risk stage must learn of this event to release holds."""
        kind = type(event)
        if kind in _TRADED:
            trade = cast(TradeExecuted, event)
            accounts = {trade.buyer_id, trade.seller_id}
        elif kind in _BOTH_SIDES_TOLD:
            # A delivery pays the provider; a bundle drawn also tells the holder's risk what it
            # may no longer resell.
            delivered = cast(DeliverySettled | BundleDrawn, event)
            accounts = {delivered.provider_id, delivered.buyer_id}
        elif kind in _OWNER_TOLD:
            owned = cast(
                OrderCancelled | OrderAmended | OrderReduced | AmendRejected | GrantApproved, event
            )
            accounts = {owned.account_id}
        elif kind in _TOLD_EVERY_RISK_PARTITION:
            # Risk is partitioned by account: every partition must know what is listed, who
            # registered which enterprise and the voucher policy, and move the capacity and
            # entitlements its accounts hold in a strip that cascaded.
            return set(range(self.topics.command_partitions))
        else:
            return set()
        return {self.topics.command_partition(account) for account in accounts}


def _next_offsets(records: list[LogRecord]) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
    return offsets


def _source(record: LogRecord) -> str:
    """`topic:partition:offset` of a record, as a rejection of it names it."""
    return f"{record.topic}:{record.partition}:{record.offset}"


def _describe(error: ValidationError) -> str:
    """One line naming each invalid field and why."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
