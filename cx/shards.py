"""`cx shards`: which partitions and families each settlement shard settles, and moving
partitions between shards (`settlement.rebalance`)."""

from __future__ import annotations

import sys

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from cx.history import rules_refused
from cx.migrations import upgrade_to_head
from cx.settings import Settings, rules_differ_message
from exchange.pipeline import Topics
from settlement.rebalance import move_partitions
from settlement.rules import RulesDiffer, record_rules
from settlement.schema import events
from settlement.shards import partitions_of
from settlement.sql_store import SqlEventStore, open_event_store


def _topics(settings: Settings) -> Topics:
    return Topics.named(
        settings.topic_prefix, settings.command_partitions, settings.market_partitions
    )


def _shown(url: str) -> str:
    """A database URL without its password."""
    return make_url(url).render_as_string(hide_password=True)


async def _open(url: str) -> SqlEventStore:
    store = open_event_store(url)
    await store.initialise(upgrade_to_head)
    return store


async def show(settings: Settings) -> int:
    """Print each shard: its database, partitions, the families hashed to them, its events."""
    topics = _topics(settings)
    urls = settings.shard_urls()
    catalogue = settings.catalogue()
    families = {spec.family for spec in catalogue} | set(catalogue.rolled_families)
    for shard, url in enumerate(urls):
        mine = partitions_of(shard, len(urls), topics.market_partitions)
        store = await _open(url)
        try:
            async with store.engine.connect() as connection:
                stored = (
                    await connection.execute(select(func.count()).select_from(events))
                ).scalar()
        finally:
            await store.close()
        held = sorted(f for f in families if topics.family_partition(f) in mine)
        role = " (home: keys, programmes, accounts registry, idempotency)" if shard == 0 else ""
        print(f"shard {shard}{role}: {_shown(url)}")
        print(f"  partitions {', '.join(map(str, mine))}; {stored} events")
        print(f"  families: {', '.join(held) or '-'}")
    return 0


async def move(settings: Settings, to: list[str]) -> int:
    """Move the partitions whose shard differs between CX_SETTLEMENT_SHARDS and `to` (the new
    shards after the home one); 1 if the merged history's hash changed."""
    old_urls = settings.shard_urls()
    new_urls = [old_urls[0], *to]
    if len(new_urls) > settings.market_partitions:
        print(
            f"cx shards move: {len(new_urls)} shards, more than the {settings.market_partitions} "
            "events partitions (CX_MARKET_PARTITIONS)"
        )
        return 2
    opened: dict[str, SqlEventStore] = {}
    try:
        for url in [*old_urls, *new_urls]:
            if url not in opened:
                opened[url] = await _open(url)
        catalogue = settings.catalogue()
        if await rules_refused("cx shards move", [opened[u] for u in old_urls], catalogue):
            return 2
        for url in new_urls:
            # A new shard's events are of this history: its rules go with them.
            try:
                await record_rules(opened[url].engine, catalogue.rules_record())
            except RulesDiffer as error:
                message = rules_differ_message(error.changes)
                print(f"cx shards move: 规则不符 rules differ: {url}: {message}", file=sys.stderr)
                return 2
        report = await move_partitions(
            [opened[u] for u in old_urls],
            [opened[u] for u in new_urls],
            _topics(settings).events,
            settings.market_partitions,
            catalogue,
        )
    finally:
        for store in opened.values():
            await store.close()
    for moved in report.moves:
        print(
            f"partition {moved.partition}: {moved.events} events from shard {moved.source} "
            f"to shard {moved.target}"
        )
    if not report.moves:
        print("no partition changes shard")
    print(f"history hash before: {report.before}")
    print(f"history hash after:  {report.after}")
    if report.before != report.after:
        print("the merged history changed: do not start settlement; run the move again")
        return 1
    print(f"now set CX_SETTLEMENT_SHARDS={' '.join(to)!r} and start settlement")
    return 0
