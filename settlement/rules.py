"""The market rules recorded with the history, and the check every start makes against them.

The rules that shape state (gate closure, the auctions' gates, fees, bonds, listing horizons:
`Catalogue.rules_record`) are configuration, but a history is only consistent under the rules
it was made with: matching's snapshots keep each book's closing time, while risk, a replay and
an audit take the rules from the configuration. So the first start records them in the event
store's database (each settlement shard's), beside the events, and every later start, replay
and audit compares its own with them (docs/DESIGN.md, "Market rules are part of the history").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exchange.domain.catalogue import RuleChange, rule_changes
from settlement.schema import events, market_rules
from settlement.sql_store import writing


class RulesDiffer(ValueError):
    """The rules asked for differ from those recorded with the history."""

    def __init__(self, changes: list[RuleChange]) -> None:
        super().__init__(", ".join(change.setting for change in changes))
        self.changes = changes


@dataclass(frozen=True, slots=True)
class RulesRecorded:
    """What checking the rules against a history's record found (and wrote)."""

    added: list[str] = field(default_factory=list)
    """The settings recorded by this check: every one at a history's first start, else those
    the record lacked (a release that added them, or a history from before the record)."""
    unrecorded_history: bool = False
    """The store held events but no recorded rules: a history from before they were
    recorded, which takes the rules it starts with as its own."""


async def recorded_rules(connection: AsyncConnection) -> dict[str, Any]:
    """The rules recorded with the history, by setting (empty: none recorded)."""
    rows = await connection.execute(select(market_rules.c.setting, market_rules.c.value))
    return {row.setting: json.loads(row.value) for row in rows}


async def check_rules(connection: AsyncConnection, rules: Mapping[str, Any]) -> None:
    """Raise RulesDiffer if `rules` differ from those recorded (none recorded: no difference)."""
    changes = rule_changes(await recorded_rules(connection), rules)
    if changes:
        raise RulesDiffer(changes)


async def record_rules(engine: AsyncEngine, rules: Mapping[str, Any]) -> RulesRecorded:
    """Check `rules` against the history's record and record the settings it lacks; raise
    RulesDiffer, writing nothing, if any recorded setting differs.

    Processes starting together (the stages of a Kafka deployment) may each record: the first
    row of a setting stays, and each process checks itself against what was kept."""
    async with writing(engine) as connection:
        recorded = await recorded_rules(connection)
        changes = rule_changes(recorded, rules)
        if changes:
            raise RulesDiffer(changes)
        added = [setting for setting in rules if setting not in recorded]
        unrecorded_history = False
        if added:
            if not recorded:
                unrecorded_history = bool(
                    (await connection.execute(select(exists().select_from(events)))).scalar()
                )
            dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
            await connection.execute(
                dialect.insert(market_rules).on_conflict_do_nothing(),
                [{"setting": setting, "value": json.dumps(rules[setting])} for setting in added],
            )
    if added:
        # Another process may have recorded a setting first, with another value.
        async with engine.connect() as connection:
            await check_rules(connection, rules)
    return RulesRecorded(added, unrecorded_history)
