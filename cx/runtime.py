"""Assembles a running exchange from settings: the log, the event store and the stages.

With no KAFKA_BOOTSTRAP_SERVERS and no DATABASE_URL this is the embedded default: every stage
in one process over the durable in-process log and a SQLite event store under CX_DATA_DIR.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

from cx.migrations import upgrade_to_head
from cx.settings import Settings, rules_differ_message
from exchange.adapters.inprocess_log import InProcessLog, wall_clock_ms
from exchange.adapters.kafka_log import KafkaLog
from exchange.dayahead import DayAheadRunner
from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import Command, encode
from exchange.log import CommandLog, LogProducer
from exchange.pipeline import MatchingRunner, RiskRunner, Topics, routing_key
from settlement import projections as _projections  # noqa: F401  (registers the ledger tables)
from settlement.rules import RulesDiffer, record_rules
from settlement.service import SettlementRunner
from settlement.shards import partitions_of
from settlement.snapshots import SqlSnapshotStore
from settlement.sql_store import SqlEventStore, open_event_store

log = logging.getLogger(__name__)

Stage = Literal["risk", "matching", "settlement", "api"]
STAGES: tuple[Stage, ...] = ("risk", "matching", "settlement", "api")


class RulesChanged(Exception):
    """The market rules set now differ from those recorded with the history: the exchange
    refuses to start (its message says which, and how to go on)."""


class Runner(Protocol):
    """A stage that runs until told to stop."""

    name: str

    async def run(self, stop: asyncio.Event) -> None:
        """Process input until `stop` is set."""


class ExchangeRuntime:
    """The log, the store and the topics one process works with."""

    def __init__(
        self,
        settings: Settings,
        command_log: CommandLog,
        store: SqlEventStore,
        catalogue: Catalogue,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.clock_ms = clock_ms
        """The log's clock: the time records appended now are stamped with."""
        self.log = command_log
        self.store = store
        """The home shard's store: settlement's first shard, and the API's own tables."""
        self.shards: list[SqlEventStore] = [store]
        """Every settlement shard's store, the home shard's first (`settlement.shards`)."""
        self.catalogue = catalogue
        self.topics = Topics.named(
            settings.topic_prefix, settings.command_partitions, settings.market_partitions
        )
        self.seal = settings.operator_seal()
        """Signs the operator commands the API sends; the risk stage verifies them."""
        self._producer: LogProducer | None = None
        self.running: dict[str, Runner] = {}
        """The stages built by `runners`, by name, for inspection by operators and tests."""

    @classmethod
    async def open(
        cls,
        settings: Settings,
        catalogue: Catalogue | None = None,
        clock_ms: Callable[[], int] | None = None,
        *,
        market_rules: bool = True,
    ) -> ExchangeRuntime:
        """Connect to the configured log and store, creating topics and schema if missing.

        `clock_ms` replaces the wall clock as the log's time (simulations, and tests that must
        reach a delivery hour): every record appended is stamped with it. With
        `market_rules=False` (a command that runs no stage: `cx init`, `cx deadletters`) the
        market rules are neither recorded nor checked: such a command, run with whatever
        settings its shell has, must not make them the history's, nor be refused for them.
        """
        command_log: CommandLog
        if settings.kafka_bootstrap_servers:
            command_log = KafkaLog(
                settings.kafka_bootstrap_servers,
                clock_ms=clock_ms,
                replication_factor=settings.kafka_replication_factor,
                min_insync_replicas=settings.kafka_min_insync_replicas,
            )
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            log_dir = settings.data_dir / "log"
            command_log = InProcessLog(log_dir, clock_ms or wall_clock_ms)
        if not settings.database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = open_event_store(settings.event_store_url())
        await store.initialise(upgrade_to_head)
        listed = catalogue or settings.catalogue()
        runtime = cls(settings, command_log, store, listed, clock_ms or wall_clock_ms)
        try:
            for url in settings.shard_urls()[1:]:
                shard = open_event_store(url)
                runtime.shards.append(shard)
                await shard.initialise(upgrade_to_head)
            if market_rules:
                await runtime._record_rules()
        except BaseException:
            await runtime.close()
            raise
        await runtime.topics.create(command_log)
        return runtime

    async def _record_rules(self) -> None:
        """Record the market rules with the history on its first start, or check them against
        those it recorded: RulesChanged, saying what differs, if they are not the same."""
        rules = self.catalogue.rules_record()
        for k, store in enumerate(self.shards):
            where = "" if len(self.shards) == 1 else f" (settlement shard {k})"
            try:
                recorded = await record_rules(store.engine, rules)
            except RulesDiffer as error:
                raise RulesChanged(rules_differ_message(error.changes)) from None
            if recorded.unrecorded_history:
                log.warning(
                    "此历史没有记录市场规则 (记录之前的历史), 以现在的规则为准并记录 this history "
                    "has no recorded market rules (it was made before they were recorded): the "
                    "rules it starts with now are taken as its own and recorded%s",
                    where,
                )
            elif recorded.added and len(recorded.added) < len(rules):
                log.warning(
                    "记录了此历史中没有的规则 recorded the rules this history had none of%s, as "
                    "they are now: %s",
                    where,
                    ", ".join(recorded.added),
                )
            elif recorded.added:
                log.info("recorded the market rules with the new history%s", where)

    async def submit(self, command: Command) -> None:
        """Append a command to the commands topic, keyed by its account (or operator)."""
        if self._producer is None:
            self._producer = await self.log.producer()
        key = routing_key(command)
        partition = self.topics.command_partition(key)
        await self._producer.send_and_wait(
            self.topics.commands, partition, encode(command), key.encode()
        )

    def runners(self, stages: Iterable[Stage], shard: int | None = None) -> list[Runner]:
        """The pipeline stages (of risk, matching, settlement) to run in this process; the
        settlement stage settles every shard, or only `shard`."""
        built: list[Runner] = []
        snapshots = SqlSnapshotStore(self.store.engine)
        every = self.settings.snapshot_every
        for stage in stages:
            if stage == "risk":
                built.append(
                    RiskRunner(
                        self.log, self.topics, self.catalogue, None, snapshots, every, self.seal
                    )
                )
            elif stage == "matching":
                built.append(
                    MatchingRunner(self.log, self.topics, self.catalogue, None, snapshots, every)
                )
                if self.catalogue.rules.day_ahead_gate_ms is not None:
                    # The day-ahead auction runs with matching: its one partition goes to one
                    # of the matching processes.
                    built.append(
                        DayAheadRunner(self.log, self.topics, self.catalogue, None, snapshots)
                    )
            elif stage == "settlement":
                built += self._settlement_runners(shard)
        for runner in built:
            key = runner.name
            if isinstance(runner, SettlementRunner) and runner.shard:
                key = f"{runner.name}-{runner.shard}"
            self.running[key] = runner
        return built

    def _settlement_runners(self, shard: int | None) -> list[SettlementRunner]:
        """One runner per shard (or for `shard`), each settling its partitions into its store."""
        count = len(self.shards)
        if shard is not None and not 0 <= shard < count:
            raise ValueError(
                f"there is no settlement shard {shard}: CX_SETTLEMENT_SHARDS gives {count} "
                f"(0 to {count - 1}, 0 the home database)"
            )
        if count == 1:
            return [SettlementRunner(self.log, self.topics, self.store, self.catalogue)]
        chosen = range(count) if shard is None else [shard]
        return [
            SettlementRunner(
                self.log,
                self.topics,
                self.shards[k],
                self.catalogue,
                partitions_of(k, count, self.topics.market_partitions),
                shard=k,
            )
            for k in chosen
        ]

    async def close(self) -> None:
        """Release the producer, the log and the store."""
        if self._producer is not None:
            await self._producer.close()
        await self.log.close()
        for store in self.shards:
            await store.close()
