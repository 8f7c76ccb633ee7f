"""The exchange `cx simulate` runs a world through: assembled from the settings, on the
simulation's clock (`simulations.engine` drives it)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from cx.migrations import upgrade_to_head
from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from exchange.adapters.inprocess_log import InProcessLog
from exchange.adapters.kafka_log import KafkaLog
from exchange.log import CommandLog
from settlement.sql_store import open_event_store
from simulations.agents import DAY_AHEAD_GATE, INTRADAY_AUCTION_HOURS
from simulations.engine import FAMILIES
from simulations.world import World


def settings_for(world: World, data_dir: Path) -> Settings:
    """The exchange's settings for a run: the simulated families rolled `listing_days` ahead,
    the scenario's bond; everything else from the environment.

    The commands topic has one partition. Each stage is a function of its input partitions,
    but a stage that reads several merges them into its outputs in the order its consumer's
    batches happen to hold them, and risk's outputs are matching's input: with one commands
    partition that merge, and so every order book, is the same in every run.

    A day-ahead run (`world.day_ahead`) sets the day-ahead gate (`DAY_AHEAD_GATE`, 12:00 CST
    the day before delivery), an intraday one (`world.intraday`) intraday auctions every
    `INTRADAY_AUCTION_HOURS` too, and each names its topics apart from the other runs of
    the seed.

    Event ids start with the topic prefix. A PostgreSQL store may hold earlier runs, whose
    events a rerun with the same ids would be taken for (the store drops a repeated id), so
    there the prefix also names the run; the figures do not depend on it.
    """
    settings = Settings(
        CX_DATA_DIR=data_dir,
        CX_LISTINGS=",".join(FAMILIES),
        CX_LISTING_DAYS=world.scenario.listing_days,
        CX_BOND_BPS=world.scenario.bond_bps,
        CX_COMMAND_PARTITIONS=1,
        CX_DAY_AHEAD_GATE=DAY_AHEAD_GATE if world.day_ahead else "",
        CX_INTRADAY_AUCTION_HOURS=INTRADAY_AUCTION_HOURS if world.intraday else 0,
    )
    prefix = f"sim-{world.scenario.name}-{world.seed}"
    if world.intraday:
        prefix += "-intraday"
    elif world.day_ahead:
        prefix += "-dayahead"
    if settings.database_url:
        prefix += f"-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(update={"topic_prefix": prefix})


async def open_simulated_exchange(
    world: World, data_dir: Path, clock_ms: Callable[[], int]
) -> ExchangeRuntime:
    """The log, the event store and the topics of a run of `world`, its data under
    `data_dir`, every record stamped by `clock_ms`."""
    settings = settings_for(world, data_dir)
    # The simulated clock stamps every record (on Kafka: topics that keep producers' times).
    command_log: CommandLog = (
        KafkaLog(
            settings.kafka_bootstrap_servers,
            clock_ms=clock_ms,
            replication_factor=settings.kafka_replication_factor,
            min_insync_replicas=settings.kafka_min_insync_replicas,
        )
        if settings.kafka_bootstrap_servers
        else InProcessLog(clock_ms=clock_ms)
    )
    store = open_event_store(settings.event_store_url())
    await store.initialise(upgrade_to_head)
    runtime = ExchangeRuntime(settings, command_log, store, settings.catalogue(), clock_ms)
    await runtime.topics.create(command_log)
    return runtime
