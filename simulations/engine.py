"""Runs a world through the real pipeline on a simulated log clock.

The exchange's only clock is the log's append time, so simulated time is the log's time: the
run opens an `InProcessLog` whose clock is the simulation's (`SimulatedClock`), and every
record appended, by an agent or by a stage, is stamped with the simulated time. Each simulated
hour has two phases, each at a fixed log time:

1. at the hour (`:00`): a `tick` to every family (gate closures, deliveries and settlements
   fall due on the log clock; with a day-ahead auction, sent alone, so that at a gate the
   auction has run before anyone acts), programme administration, then every provider meters,
   recalls, reprices and deposits the newly listed hours;
2. at `:20`: every buyer and reseller acts on the books the first phase left.

A phase's commands are appended in one go (the in-process producer's `send` does not yield),
then the run waits until the risk and matching stages have committed everything in their
topics, which happens only after their outputs are written: the pipeline is then quiet, and
the agents read the events before the next phase. Since nothing else appends meanwhile, the
order of every topic is a function of the seed, and so is the event store. With a day-ahead
auction the day-ahead stage counts too: at a gate, matching sends it the day's bids and it
writes the result back to the orders topic, all before the phase is quiet.

Kafka stamps records with the broker's clock (the exchange's topics use LogAppendTime), so a
simulated week cannot run on it; the run always uses the in-process log, and the event store
configured by DATABASE_URL (PostgreSQL) or else SQLite in the report folder.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, get_args

from exchange.domain.catalogue import cst_day_start_ms
from exchange.domain.messages import Command, ControlMarket, encode
from exchange.domain.operators import OperatorCommand, OperatorSeal
from exchange.log import CommandLog, LogProducer, TopicPartition
from exchange.pipeline import Topics, routing_key
from settlement.service import SettlementRunner
from simulations.agents import (
    DAY_MS,
    HOUR_MS,
    Context,
    funding,
    symbol_at,
)
from simulations.scenario import CARD, INTERRUPTIBLE, REGIONS
from simulations.view import MarketView
from simulations.world import World

BUYER_PHASE_MS = 20 * 60_000
"""Buyers act twenty minutes into each hour, after the providers' quotes are in the books."""
SETTLE_HOURS = 4
"""Hours run past the last delivery so its metering window closes and it settles."""
OPERATOR = "sim-clock"
FAMILIES = tuple(f"{c}.{r}" for c in (CARD, INTERRUPTIBLE) for r in REGIONS)
Progress = Callable[[str], None]


class SimulatedClock:
    """The log's clock: the simulated time, moved on by the run."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class RunResult:
    """Where the run left its events and how long it took."""

    database_url: str
    topic_prefix: str
    commands: int
    seconds: float


class RunSettings(Protocol):
    """What a run reports of the settings its exchange was assembled from."""

    @property
    def database_url(self) -> str | None:
        """The PostgreSQL event store, if one is configured."""

    @property
    def kafka_bootstrap_servers(self) -> str | None:
        """The Kafka brokers, if configured."""

    @property
    def topic_prefix(self) -> str:
        """The run's topics' prefix, which also starts its event ids."""

    def event_store_url(self) -> str:
        """Where the run's events are stored."""


class Runner(Protocol):
    """A stage that runs until told to stop."""

    async def run(self, stop: asyncio.Event) -> None:
        """Process input until `stop` is set."""


class SimulatedExchange(Protocol):
    """The exchange a run drives, on the simulated clock: its log and topics, the stages to
    run, the seal administrators' commands are signed with."""

    @property
    def settings(self) -> RunSettings:
        """The settings it was assembled from."""

    @property
    def log(self) -> CommandLog:
        """The command log, stamping every record with the simulated time."""

    @property
    def topics(self) -> Topics:
        """Its topics."""

    @property
    def seal(self) -> OperatorSeal:
        """Signs operator commands as the API would."""

    @property
    def running(self) -> Mapping[str, object]:
        """The stages built by `runners`, by name."""

    def runners(
        self, stages: Iterable[Literal["risk", "matching", "settlement"]]
    ) -> Sequence[Runner]:
        """The pipeline stages to run."""

    async def close(self) -> None:
        """Release the log and the event store."""


OpenExchange = Callable[[World, Path, Callable[[], int]], Awaitable[SimulatedExchange]]
"""Assembles the exchange a world runs through, keeping its data under a folder, on a clock
(`cx.simulation.open_simulated_exchange`, from the settings)."""


class Simulation:
    """One run of a world through risk, matching and settlement."""

    def __init__(
        self,
        world: World,
        data_dir: Path,
        open_exchange: OpenExchange,
        progress: Progress = print,
    ) -> None:
        self.world = world
        self.data_dir = data_dir
        self.open_exchange = open_exchange
        self.progress = progress
        self.clock = SimulatedClock(world.start_ms)
        self.commands = 0

    async def run(self) -> RunResult:
        """Simulate every hour of the world, then wait until settlement has stored it all."""
        began = time.monotonic()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        runtime = await self.open_exchange(self.world, self.data_dir, self.clock)
        settings = runtime.settings
        command_log = runtime.log
        store_name = "PostgreSQL" if settings.database_url else "SQLite"
        log_name = "Kafka" if settings.kafka_bootstrap_servers else "the in-process log"
        self.progress(f"{log_name}, event store {store_name}, topics {settings.topic_prefix}.*")
        stop = asyncio.Event()
        runners = runtime.runners(["risk", "matching", "settlement"])
        tasks = [asyncio.create_task(runner.run(stop)) for runner in runners]
        view = MarketView(command_log, runtime.topics)
        producer = await command_log.producer()
        try:
            hours = self.world.days * 24 + SETTLE_HOURS
            for hour in range(hours):
                now = self.world.start_ms + hour * HOUR_MS
                if self.world.day_ahead:
                    await self._phase(now, runtime, producer, view, self._ticks)
                await self._phase(now, runtime, producer, view, self._market_phase)
                await self._phase(now + BUYER_PHASE_MS, runtime, producer, view, self._buyer_phase)
                if hour % 24 == 23 or hour == hours - 1:
                    done = (
                        f"day {hour // 24 + 1}/{self.world.days}"
                        if hour < self.world.days * 24
                        else "last deliveries settled"
                    )
                    self.progress(
                        f"{done}: {self.commands:,} commands, "
                        f"{sum(s.filled > 0 for s in view.orders.values()):,} orders traded, "
                        f"{time.monotonic() - began:.0f} s"
                    )
            settlement = runtime.running.get("settlement")
            if not isinstance(settlement, SettlementRunner):
                raise TypeError(f"the exchange runs {settlement!r} as its settlement stage")
            await _settled(command_log, runtime, settlement)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await producer.close()
            await view.close()
            await runtime.close()
        return RunResult(
            settings.event_store_url(),
            settings.topic_prefix,
            self.commands,
            time.monotonic() - began,
        )

    async def _phase(
        self,
        now_ms: int,
        runtime: SimulatedExchange,
        producer: LogProducer,
        view: MarketView,
        act: Callable[[Context], list[Command]],
    ) -> None:
        self.clock.now_ms = now_ms
        listed_until = cst_day_start_ms(now_ms) + (self.world.scenario.listing_days + 1) * DAY_MS
        context = Context(
            now_ms,
            self.world.end_ms,
            listed_until,
            (now_ms - self.world.start_ms) // DAY_MS,
            view,
            self.world.day_ahead,
            self.world.intraday,
        )
        commands = act(context)
        topics = runtime.topics
        for command in commands:
            if isinstance(command, get_args(OperatorCommand)):
                # Sent as the API sends administrators' commands: under its seal.
                command = runtime.seal.sign(command)
            key = routing_key(command)
            await producer.send(
                topics.commands, topics.command_partition(key), encode(command), key.encode()
            )
        await producer.flush()
        self.commands += len(commands)
        await _quiet(runtime.log, runtime)
        await view.catch_up()

    def _ticks(self, ctx: Context) -> list[Command]:
        """A tick per family: it moves each partition's log time on even when nobody trades
        there (and, at a day-ahead gate, every partition sends the auction its bids)."""
        tick_hour = ctx.now_ms + DAY_MS
        return [
            ControlMarket(
                operator_id=OPERATOR,
                action="tick",
                symbol=symbol_at(family.split(".")[0], family.split(".")[1], tick_hour),
            )
            for family in FAMILIES
        ]

    def _market_phase(self, ctx: Context) -> list[Command]:
        world = self.world
        commands: list[Command] = []
        if ctx.now_ms == world.start_ms:
            commands += funding(world.buyers, world.providers, world.resellers)
        if not world.day_ahead:
            commands += self._ticks(ctx)
        for administrator in world.administrators:
            commands += administrator.act(ctx, world.buyers)
        for provider in world.providers:
            commands += provider.act(
                ctx, world.fleet_factor(provider, ctx.day), world.delivered_share(provider, ctx.day)
            )
        return commands

    def _buyer_phase(self, ctx: Context) -> list[Command]:
        commands: list[Command] = []
        for buyer in self.world.buyers:
            commands += buyer.act(ctx)
        for reseller in self.world.resellers:
            commands += reseller.act(ctx)
        return commands


async def _quiet(command_log: CommandLog, runtime: SimulatedExchange) -> None:
    """Wait until risk and matching have committed every record of their topics.

    A stage commits an input only after writing its outputs, so when both have committed up
    to the ends, and the ends did not move while looking, nothing is left in flight.
    """
    topics = runtime.topics
    watched = [
        (topics.group("risk"), topics.commands, topics.command_partitions),
        (topics.group("matching"), topics.orders, topics.market_partitions),
    ]
    if "dayahead" in runtime.running:
        watched.append((topics.group("dayahead"), topics.dayahead, 1))
    consumers = [(await command_log.consumer(group), topic, n) for group, topic, n in watched]
    try:
        async with asyncio.timeout(300):
            while True:
                ends = [
                    await consumer.end_offset(TopicPartition(topic, p))
                    for consumer, topic, n in consumers
                    for p in range(n)
                ]
                committed = [
                    await consumer.committed(TopicPartition(topic, p)) or 0
                    for consumer, topic, n in consumers
                    for p in range(n)
                ]
                again = [
                    await consumer.end_offset(TopicPartition(topic, p))
                    for consumer, topic, n in consumers
                    for p in range(n)
                ]
                if committed == ends == again:
                    return
                await asyncio.sleep(0.005)
    finally:
        for consumer, _, _ in consumers:
            await consumer.close()


async def _settled(
    command_log: CommandLog, runtime: SimulatedExchange, settlement: SettlementRunner
) -> None:
    consumer = await command_log.consumer()
    try:
        events = runtime.topics.events
        ends = {
            TopicPartition(events, p): await consumer.end_offset(TopicPartition(events, p))
            for p in range(runtime.topics.market_partitions)
        }
    finally:
        await consumer.close()
    await settlement.wait_settled(ends, timeout_s=300)
