"""The market rules are part of the history: recorded at its first start, and an exchange, a
replay or an audit under other rules refuses, naming each setting that differs, rather than run
with risk and matching in disagreement or report discrepancies that are not in the history.

A history from before the record (no rules recorded) keeps starting, under the rules it starts
with, which are then recorded as its own."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from cx.cli import main
from cx.runtime import ExchangeRuntime, RulesChanged
from cx.settings import RULE_SETTINGS, Settings, parse_fees
from exchange.domain.catalogue import (
    ListingRule,
    MarketRules,
    RuleChange,
    default_catalogue,
    rule_changes,
)
from settlement.rules import recorded_rules
from settlement.schema import market_rules
from settlement.sql_store import open_event_store
from tests.e2e.harness import running_exchange, settings_for, settle
from tests.history.helpers import GZ0, cx, funded_buyer

pytestmark = pytest.mark.e2e


def _changed(settings: Settings, **overrides: object) -> Settings:
    """The same exchange (data, database, topics, port) with other settings."""
    return settings.model_copy(update=overrides)


def test_the_record_holds_every_market_rule_and_the_listings_and_names_each() -> None:
    catalogue = default_catalogue(
        MarketRules(gate_closure_ms=5 * 60_000, fees=(("H100-80G", -2, 10),)),
        [ListingRule(("H100-80G.GZ",), 1, 0)],
    )
    record = catalogue.rules_record()
    assert set(record) == {f.name for f in dataclasses.fields(MarketRules)} | {
        "listed_families",
        "listing_days",
        "term_days",
        "static_contracts",
    }
    assert record["gate_closure_ms"] == 300_000
    assert record["fees"] == [["H100-80G", -2, 10]], "JSON-ready: as the store reads it back"
    assert record["listing_days"] == {"H100-80G.GZ": 1}
    assert GZ0 in record["static_contracts"]
    # Each is named in a refusal: its variable, or what it is when no variable sets it.
    assert set(record) <= set(RULE_SETTINGS)

    recorded = {"gate_closure_ms": 3_600_000, "bond_bps": 0, "dropped_by_a_release": 1}
    assert rule_changes(recorded, record) == [RuleChange("gate_closure_ms", 3_600_000, 300_000)]


async def test_a_restart_under_a_changed_rule_is_refused_saying_which_and_the_same_rules_start(
    exchange_settings: Settings,
) -> None:
    runtime = await ExchangeRuntime.open(exchange_settings)
    await runtime.close()

    changed = _changed(exchange_settings, gate_closure_minutes=5, day_ahead_gate="12:00")
    with pytest.raises(RulesChanged) as refused:
        await ExchangeRuntime.open(changed)
    message = str(refused.value)
    assert "CX_GATE_CLOSURE_MINUTES" in message
    assert "记录的 recorded 60, 现在 now 5" in message
    assert "CX_DAY_AHEAD_GATE" in message
    assert "记录的 recorded 空 empty, 现在 now 12:00" in message
    assert "CX_GATE_CLOSURE_MINUTES=60 CX_DAY_AHEAD_GATE=''" in message
    assert "CX_DATA_DIR" in message, "says how to start a history under the new rules"
    assert "CX_FEES" not in message, "names only what differs"

    # The refusal wrote nothing: the recorded rules still start, the changed ones still not.
    runtime = await ExchangeRuntime.open(exchange_settings)
    try:
        async with runtime.store.engine.connect() as connection:
            recorded = await recorded_rules(connection)
    finally:
        await runtime.close()
    assert recorded == runtime.catalogue.rules_record()
    assert recorded["gate_closure_ms"] == 3_600_000
    with pytest.raises(RulesChanged):
        await ExchangeRuntime.open(_changed(exchange_settings, gate_closure_minutes=5))


def test_cx_serve_refuses_to_start_under_a_changed_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CX_LISTINGS", "H100-80G.GZ")
    monkeypatch.setenv("CX_LISTING_DAYS", "1")
    asyncio.run(_start_once())
    monkeypatch.setenv("CX_GATE_CLOSURE_MINUTES", "5")
    monkeypatch.setenv("CX_LISTING_DAYS", "2")

    assert main(["serve"]) == 2

    refusal = capsys.readouterr().err
    assert refusal.startswith("cx serve: 规则不符 rules differ: 此历史是按另一套市场规则记录的")
    assert "CX_GATE_CLOSURE_MINUTES (闭市 gate closure, minutes before delivery)" in refusal
    assert "记录的 recorded 60, 现在 now 5" in refusal
    assert "CX_LISTING_DAYS" in refusal
    assert "CX_GATE_CLOSURE_MINUTES=60 CX_LISTING_DAYS=1" in refusal


async def _start_once() -> None:
    """What a stage's start does to the rules, under the settings of the environment."""
    runtime = await ExchangeRuntime.open(Settings())
    await runtime.close()


async def _recorded(settings: Settings) -> dict[str, Any]:
    store = open_event_store(settings.event_store_url())
    try:
        async with store.engine.connect() as connection:
            return await recorded_rules(connection)
    finally:
        await store.close()


def test_commands_that_run_no_stage_neither_record_the_rules_nor_are_refused_for_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cx init` (a migration job) and `cx deadletters` run with whatever settings their shell
    has: were they to record those, the exchange's own start under its real rules would be
    refused; were they to check them, an operator could not read the dead letters."""
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "CX_LISTINGS", "CX_FEES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CX_DATA_DIR", str(tmp_path))
    assert main(["init"]) == 0
    assert main(["deadletters", "list"]) == 0
    assert asyncio.run(_recorded(Settings())) == {}

    # The exchange's first start records its own rules, not the shell's of those commands.
    monkeypatch.setenv("CX_LISTINGS", "H100-80G.GZ")
    asyncio.run(_start_once())
    assert asyncio.run(_recorded(Settings()))["listed_families"] == ["H100-80G.GZ"]

    # Under other settings they still run; a stage's start is still refused.
    monkeypatch.setenv("CX_GATE_CLOSURE_MINUTES", "5")
    assert main(["init"]) == 0
    assert main(["deadletters", "list"]) == 0
    with pytest.raises(RulesChanged, match="CX_GATE_CLOSURE_MINUTES"):
        asyncio.run(_start_once())


def test_the_same_fees_in_another_order_are_the_same_rule_and_a_class_twice_is_refused() -> None:
    listed = parse_fees("H100-80G:-2:10,CPU:0:5")
    assert listed == parse_fees("CPU:0:5, H100-80G:-2:10")
    assert listed == (("CPU", 0, 5), ("H100-80G", -2, 10))
    with pytest.raises(ValueError, match="'CPU' is given a fee twice"):
        parse_fees("CPU:0:5,H100-80G:-2:10,CPU:1:6")


async def test_a_history_from_before_the_record_starts_and_takes_its_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path)
    async with running_exchange(settings) as exchange:
        await funded_buyer(exchange)
        await settle(exchange.runtime)
    # As a database from before the record is after its migration: the table, empty.
    store_runtime = await ExchangeRuntime.open(settings)
    try:
        async with store_runtime.store.engine.begin() as connection:
            await connection.execute(delete(market_rules))
    finally:
        await store_runtime.close()

    # It starts, even under other rules than it was made with (nothing says which they
    # were), takes them as its own and says so.
    changed = _changed(settings, bond_bps=500)
    with caplog.at_level(logging.WARNING, logger="cx.runtime"):
        async with running_exchange(changed) as exchange:
            buyer = await exchange.as_("b")
            account = (await buyer.get("/v1/accounts/b")).json()
            assert account["cash"] == {"available": 1_000_000, "held": 0}
            async with exchange.runtime.store.engine.connect() as connection:
                recorded = await recorded_rules(connection)
                rows = (await connection.execute(select(market_rules.c.setting))).all()
    assert "此历史没有记录市场规则" in caplog.text
    assert "this history has no recorded market rules" in caplog.text
    assert recorded["bond_bps"] == 500
    assert len(rows) == len(recorded)
    # From now on those are its rules.
    with pytest.raises(RulesChanged, match="CX_BOND_BPS"):
        await ExchangeRuntime.open(settings)


async def test_an_audit_or_replay_under_other_rules_says_rules_differ(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with running_exchange(settings) as exchange:
        await funded_buyer(exchange)
        await settle(exchange.runtime)

    for command in (["audit"], ["replay", "--verify"]):
        audited = cx(settings, *command, CX_DAY_AHEAD_GATE="12:00")
        assert audited.returncode == 2, audited.stdout + audited.stderr
        assert audited.stderr.startswith(f"cx {command[0]}: 规则不符 rules differ:")
        assert "CX_DAY_AHEAD_GATE (日前竞价截止 day-ahead gate, CST)" in audited.stderr
        assert "记录的 recorded 空 empty, 现在 now 12:00" in audited.stderr
        assert "差异 discrepancy" not in audited.stdout
        assert "MISMATCH" not in audited.stdout

    clean = cx(settings, "audit")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "无差异 no discrepancies" in clean.stdout
    assert clean.stderr == ""
