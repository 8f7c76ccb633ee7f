"""Settlement in shards: one history settled into one database and into two shards on two
PostgreSQL servers gives the same account views, audits clean per shard and over all, and
replays to the same state hash."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api.app import create_app
from api.keys import Role, create_key
from api.marketdata import MarketData
from api.sql import ShardedLedger, SqlLedger
from cx import cli, history
from cx import shards as shards_command
from cx.runtime import ExchangeRuntime
from cx.settings import Settings
from exchange.domain.catalogue import CHINA_STANDARD_TIME
from exchange.log import TopicPartition
from settlement.audit import audit, audit_shard, audit_shards
from settlement.pipeline_status import LogOffsets, StatusMonitor
from settlement.projections import cash_balances, enterprise_registrations, enterprises
from settlement.replay import replay
from settlement.service import SettlementRunner
from settlement.shards import MergedView, partitions_of, shard_of, viewing
from settlement.sql_store import SqlEventStore, open_event_store
from tests.conftest import fresh_database, missing
from tests.e2e.grants import granted, register, uscc_of
from tests.e2e.harness import (
    RunningExchange,
    eventually,
    free_port,
    running_exchange,
    settings_for,
    settle,
)
from tests.e2e.private_postgres import BIN, private_postgres

YRD = "H100-80G.YRD.20271201T00"
"""Family H100-80G.YRD: events partition 0 of 3, settlement shard 0 of 2."""
GZ = "H100-80G.GZ.20271201T00"
"""Family H100-80G.GZ: events partition 1 of 3, settlement shard 1 of 2."""
BUYERS = ("b1", "b3")
"""b1's account-level events (its deposit) go to partition 1 (shard 1), b3's to partition 2
(shard 0): each buys in both families, so each has a negative part in one shard."""
SELLERS = ("s1", "s2")
ADMIN = "hz-admin"
PROGRAMME: dict[str, Any] = {
    "programme_id": "hz-fund",
    "issuer": "Hangzhou",
    "budget": 1_000_000,
    "rate_bps": 3_000,
    "cap_per_contract": 1_000,
    "cap_per_enterprise": 1_000_000,
    "cities": ["hangzhou"],
    "valid_from": 1_767_225_600_000,
    "valid_until": 1_830_297_600_000,
}
"""30% of each purchase up to 10.00 CNY a contract, from 2026 to the end of 2027."""


def test_shard_of_partition() -> None:
    assert [shard_of(p, 2) for p in range(5)] == [0, 1, 0, 1, 0]
    assert partitions_of(0, 2, 5) == [0, 2, 4]
    assert partitions_of(1, 2, 5) == [1, 3]
    assert partitions_of(0, 1, 3) == [0, 1, 2]


def test_more_shards_than_partitions_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="more than the 3 events partitions"):
        settings_for(
            tmp_path,
            database_url="postgresql+asyncpg://u@h/a",
            CX_SETTLEMENT_SHARDS="postgresql+asyncpg://u@h/b postgresql+asyncpg://u@h/c "
            "postgresql+asyncpg://u@h/d",
        )


def test_a_shard_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "CX_DATA_DIR": str(tmp_path)}
    for variable in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "CX_SETTLEMENT_SHARDS"):
        env.pop(variable, None)
    for arguments, refusal in (
        (["run", "settlement", "--shard", "1"], "there is no settlement shard 1"),
        (["run", "risk", "--shard", "0"], "--shard chooses a settlement shard"),
        (["audit", "--shard", "2"], "there is no settlement shard 2"),
        (["replay", "--shard", "2"], "there is no settlement shard 2"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "cx.cli", *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (arguments, done.stderr)
        assert refusal in done.stderr, (arguments, done.stderr)


@pytest.fixture(scope="module")
def second_server() -> Iterator[str]:
    """A PostgreSQL server of the test's own, on a free port: the second shard's."""
    if not (BIN / "initdb").exists():
        missing(f"PostgreSQL server binaries (initdb, pg_ctl) are required in {BIN}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing("runuser is required to start a PostgreSQL server of the test's own as root")
    with private_postgres(free_port()) as cluster:
        yield cluster.url


@pytest.fixture(params=["embedded-log", "kafka"])
def log_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "kafka":
        return {"kafka": request.getfixturevalue("kafka_bootstrap")}
    return {}


async def test_two_shards_on_two_servers_answer_as_one(
    tmp_path: Path, postgres_url: str, second_server: str, log_settings: dict[str, Any]
) -> None:
    async with (
        fresh_database(postgres_url) as one_url,
        fresh_database(postgres_url) as home_url,
        fresh_database(second_server) as other_url,
    ):
        one = settings_for(tmp_path, database_url=one_url, **log_settings)
        await _trade(one)
        sharded = settings_for(
            tmp_path,
            database_url=home_url,
            prefix=one.topic_prefix,
            CX_SETTLEMENT_SHARDS=other_url,
            **log_settings,
        )
        await _settle_again(sharded)
        single = open_event_store(one_url)
        shards = [open_event_store(home_url), open_event_store(other_url)]
        try:
            await _check_shards_hold_their_families(shards)
            await _check_views_agree(SqlLedger(single.engine), shards)
            await _check_reports(SqlLedger(single.engine), sharded)
            await _check_audits(single, shards, sharded)
            await _check_replays(single, shards, sharded)
            await _check_api(
                sharded,
                (await audit(single, sharded.catalogue(), sharded.market_partitions)).history_hash,
            )
            await _check_moves(single, sharded, other_url)
        finally:
            for store in (single, *shards):
                await store.close()


async def _trade(settings: Settings) -> None:
    """Deposits and trades in two families that settle in different shards."""
    async with running_exchange(settings) as exchange:
        post = exchange.client.post
        for buyer in BUYERS:
            deposited = {"kind": "cash", "amount": 5_000_000}
            assert (await post(f"/v1/accounts/{buyer}/deposits", json=deposited)).is_success
        for seller in SELLERS:
            for symbol in (YRD, GZ):
                capacity = {"kind": "capacity", "symbol": symbol, "quantity": 50}
                assert (await post(f"/v1/accounts/{seller}/deposits", json=capacity)).is_success
        # A voucher programme (its budget settles in its own partition) granting both buyers,
        # whose voucher purchases settle in both families' shards.
        admin = await exchange.as_(ADMIN, "programme_admin")
        created = await admin.post("/v1/programmes", json=PROGRAMME)
        assert created.status_code == 201, created.text
        for buyer in BUYERS:
            await granted(exchange, ADMIN, PROGRAMME["programme_id"], buyer, 10_000)
        for n in range(24):
            symbol = (YRD, GZ)[n % 2]
            seller, buyer = SELLERS[n % 2], BUYERS[(n // 2) % 2]
            price = 1800 + 10 * (n % 5)
            for account, side in ((seller, "sell"), (buyer, "buy")):
                order = {
                    "account_id": account,
                    "symbol": symbol,
                    "side": side,
                    "price": price,
                    "quantity": 1 + n % 3,
                }
                if side == "buy" and n % 4 < 2:
                    order["voucher"] = PROGRAMME["programme_id"]
                response = await post("/v1/orders", json=order)
                assert response.status_code == 201, response.text
        # Resting orders hold cash and capacity in their shard; one is cancelled.
        for symbol, price in ((YRD, 1500), (GZ, 1400)):
            resting = {"account_id": "b3", "symbol": symbol, "side": "buy", "price": price}
            response = await post("/v1/orders", json=resting | {"quantity": 2})
            assert response.status_code == 201, response.text
        cancelled = response.json()["order_id"]
        b3 = await exchange.as_("b3")
        assert (await b3.delete(f"/v1/orders/{cancelled}")).is_success
        await settle(exchange.runtime)


async def _settle_again(settings: Settings) -> None:
    """Settle the same events topic into the shards, one runner per shard."""
    runtime = await ExchangeRuntime.open(settings)
    try:
        runners = runtime.runners(["settlement"])
        assert [r.shard for r in runners if isinstance(r, SettlementRunner)] == [0, 1]
        assert set(runtime.running) == {"settlement", "settlement-1"}
        consumer = await runtime.log.consumer()
        try:
            ends = {
                TopicPartition(runtime.topics.events, p): await consumer.end_offset(
                    TopicPartition(runtime.topics.events, p)
                )
                for p in range(runtime.topics.market_partitions)
            }
        finally:
            await consumer.close()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(runner.run(stop)) for runner in runners]
        for runner in runners:
            assert isinstance(runner, SettlementRunner)
            mine = {tp: end for tp, end in ends.items() if tp in runner.partitions}
            await runner.wait_settled(mine, 60)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        await runtime.close()


async def _check_shards_hold_their_families(shards: list[SqlEventStore]) -> None:
    for k, store in enumerate(shards):
        async with store.engine.connect() as connection:
            cash = {
                r.account_id: r.available for r in await connection.execute(select(cash_balances))
            }
        # Each buyer's deposit is in one shard and some of its buys in the other: there its
        # part of the cash is negative.
        assert any(cash.get(buyer, 0) < 0 for buyer in BUYERS), (k, cash)
        async with store.view() as view:
            assert view.position > 0


async def _check_views_agree(single: SqlLedger, shards: list[SqlEventStore]) -> None:
    sharded = ShardedLedger([store.engine for store in shards])
    fills = await single.account_fills("b1", 500)
    assert fills
    month = datetime.fromtimestamp(fills[0]["ts"] / 1000, CHINA_STANDARD_TIME).strftime("%Y-%m")
    for account in (*BUYERS, *SELLERS):
        expected = await single.account_summary(account)
        assert expected is not None
        assert await sharded.account_summary(account) == expected
        assert await sharded.account_orders(account, None, 500) == await single.account_orders(
            account, None, 500
        )
        assert _by_trade(await sharded.account_fills(account, 500)) == _by_trade(
            await single.account_fills(account, 500)
        )
        assert await sharded.sold(account) == await single.sold(account)
        assert await sharded.invoices(account) == await single.invoices(account)
        assert await sharded.grant_applications(account_id=account) == (
            await single.grant_applications(account_id=account)
        )
        assert await sharded.enterprise(account) == await single.enterprise(account)
        one_statement = await single.statement(account, month)
        two_statement = await sharded.statement(account, month)
        assert one_statement["lines"]
        for statement in (one_statement, two_statement):
            statement["entries"].sort(key=lambda e: (e["ts"], e["entry_id"]))
        assert two_statement == one_statement
    report = await single.programme_report("hz-fund")
    assert report is not None
    assert report["committed"] > 0
    assert await sharded.programme_report("hz-fund") == report
    b3 = await single.account_summary("b3")
    assert b3 is not None
    assert b3["cash"]["held"] > 0
    for order in await single.account_orders("b1", None, 5):
        assert await sharded.order(order["order_id"]) == order
        assert await sharded.order_statement(order["order_id"]) == await single.order_statement(
            order["order_id"]
        )


async def _check_reports(single: SqlLedger, settings: Settings) -> None:
    """`cx report statement` and the programme's report read every shard."""
    fills = await single.account_fills("b3", 1)
    month = datetime.fromtimestamp(fills[0]["ts"] / 1000, CHINA_STANDARD_TIME).strftime("%Y-%m")
    out = io.StringIO()
    with redirect_stdout(out):
        assert await asyncio.to_thread(cli._statement_report, settings, "b3", month) == 0
    printed = json.loads(out.getvalue())
    expected = json.loads(json.dumps(await single.statement("b3", month), ensure_ascii=False))
    for statement in (printed, expected):
        statement["entries"].sort(key=lambda e: (e["ts"], e["entry_id"]))
    assert printed == expected
    # An account no shard settled anything for is a typo, not a zero statement.
    errors = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(errors):
        assert await asyncio.to_thread(cli._statement_report, settings, "b33", month) == 1
    assert "'b33'" in errors.getvalue()
    assert await cli._read_programme(settings, "hz-fund") == await single.programme_report(
        "hz-fund"
    )


def _by_trade(fills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(fills, key=lambda fill: (fill["trade_id"], fill["side"]))


async def _check_audits(
    single: SqlEventStore, shards: list[SqlEventStore], settings: Settings
) -> None:
    catalogue = settings.catalogue()
    one = await audit(single, catalogue, settings.market_partitions)
    assert one.discrepancies == []
    for store in shards:
        assert (await audit_shard(store, catalogue, settings.market_partitions)).discrepancies == []
    each, whole = await audit_shards(shards, catalogue, settings.market_partitions)
    assert [report.discrepancies for report in each] == [[], []]
    assert whole.discrepancies == []
    assert sum(report.events for report in each) == whole.events == one.events
    assert whole.trades == one.trades
    assert whole.orders == one.orders
    assert whole.history_hash == one.history_hash
    # The command: each shard, then all of them merged; exit status 0.
    out = io.StringIO()
    with redirect_stdout(out):
        assert await history.run_audit(settings, as_json=True) == 0
    documents = json.loads(out.getvalue())["shards"]
    assert [d["shard"] for d in documents] == ["shard 0", "shard 1", "all shards"]
    assert documents[-1]["history_hash"] == one.history_hash
    out = io.StringIO()
    with redirect_stdout(out):
        assert await history.run_audit(settings, as_json=True, shard=1) == 0
        assert await history.run_audit(settings, as_json=False, scope="ledger") == 0
    assert "分片 1 shard 1: 已审计 audited" in out.getvalue()


async def _check_replays(
    single: SqlEventStore, shards: list[SqlEventStore], settings: Settings
) -> None:
    catalogue = settings.catalogue()
    async with single.view() as view:
        one = await replay(view, catalogue, partitions=settings.market_partitions)
    async with viewing(shards) as views:
        merged = await replay(MergedView(views), catalogue, partitions=settings.market_partitions)
    assert merged.state.history_hash() == one.state.history_hash()
    assert merged.state.accounts_hash() == one.state.accounts_hash()
    assert merged.state.applied == one.state.applied
    out = io.StringIO()
    with redirect_stdout(out):
        assert await history.run_replay(settings, None, None, None, True, True) == 0
    document = json.loads(out.getvalue())
    assert document["history_hash"] == one.state.history_hash()
    assert document["verified"]["mismatches"] == []
    # Restarted from each shard's snapshot (stored as settlement stopped): the grants' uses
    # in one shard and their approvals in the other put together.
    assert document["snapshot_refused"] is None
    assert document["shard_snapshots"] is not None
    assert all(position > 0 for position in document["shard_snapshots"])
    for k in (0, 1):
        out = io.StringIO()
        with redirect_stdout(out):
            assert await history.run_replay(settings, None, None, None, True, True, shard=k) == 0
        assert json.loads(out.getvalue())["history_hash"] != one.state.history_hash()
    async with shards[1].engine.connect() as connection:
        assert (await connection.execute(select(func.count()).select_from(cash_balances))).scalar()


async def _check_api(settings: Settings, history_hash: str) -> None:
    """The API of a sharded exchange reads accounts over every shard."""
    runtime = await ExchangeRuntime.open(settings)
    try:
        app = create_app(runtime, MarketData(runtime.log, runtime.topics, runtime.catalogue))
        assert isinstance(app.state.api.ledger, ShardedLedger)
        key = await create_key(runtime.store.engine, "b1", Role.BUYER, "test")
        async with _client(app, key.key) as client:
            response = await client.get("/v1/accounts/b1")
            assert response.status_code == 200, response.text
        operator = await create_key(runtime.store.engine, "operator", Role.OPERATOR, "test")
        async with _client(app, operator.key) as client:
            audited = (await client.get("/v1/admin/audit")).json()
            replayed = (await client.get("/v1/admin/replay")).json()
        assert audited["discrepancies"] == []
        assert audited["history_hash"] == replayed["history_hash"] == history_hash
        expected = await app.state.api.ledger.account_summary("b1")
        assert expected is not None
        assert response.json()["cash"] == expected["cash"]
        assert response.json()["cash"]["available"] > 0
        # Status reads each partition's settled offset from its own shard: nothing lags.
        monitor = StatusMonitor(
            LogOffsets(runtime.log), runtime.topics, runtime.store, 30.0, shards=runtime.shards
        )
        settled = [p for p in (await monitor.status()).partitions if p.stage == "settlement"]
        assert len(settled) == runtime.topics.market_partitions
        assert all(p.offset == p.end_offset > 0 and p.lag == 0 for p in settled), settled
        await monitor.close()
    finally:
        await runtime.close()


async def _check_moves(single: SqlEventStore, sharded: Settings, other_url: str) -> None:
    """`cx shards move` to the home shard alone, then back to two shards: each time the
    merged history's hash is unchanged, the audits are clean and the views are one store's."""
    catalogue = sharded.catalogue()
    expected = (await audit(single, catalogue, sharded.market_partitions)).history_hash
    home_only = sharded.model_copy(update={"settlement_shards": ""})
    out = io.StringIO()
    with redirect_stdout(out):
        assert await shards_command.move(sharded, []) == 0
        assert await shards_command.show(home_only) == 0
    text = out.getvalue()
    assert "partition 1: " in text
    assert "from shard 1 to shard 0" in text
    assert f"history hash after:  {expected}" in text
    assert "shard 0 (home" in text
    assert "H100-80G.GZ" in text
    home = open_event_store(sharded.event_store_url())
    other = open_event_store(other_url)
    try:
        async with other.view() as view:
            assert view.position == 0 or (await view.read_all(0, 1)) == []
        report = await audit(home, catalogue, sharded.market_partitions)
        assert report.discrepancies == []
        assert report.history_hash == expected
        await _check_views_agree(SqlLedger(single.engine), [home])
        out = io.StringIO()
        with redirect_stdout(out):
            assert await shards_command.move(home_only, [other_url]) == 0
        assert "from shard 0 to shard 1" in out.getvalue()
        each, whole = await audit_shards([home, other], catalogue, sharded.market_partitions)
        assert [r.discrepancies for r in (*each, whole)] == [[], [], []]
        assert whole.history_hash == expected
        await _check_views_agree(SqlLedger(single.engine), [home, other])
        # Run again, a move finds nothing to do.
        out = io.StringIO()
        with redirect_stdout(out):
            assert await shards_command.move(sharded, [other_url]) == 0
        assert "no partition changes shard" in out.getvalue()
    finally:
        await home.close()
        await other.close()


def _client(app: Any, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers={"Authorization": f"Bearer {key}"},
    )


async def test_a_live_exchange_settles_in_two_shards_and_answers_for_the_account(
    tmp_path: Path, postgres_url: str, second_server: str
) -> None:
    """Every stage and the API in one process with two settlement shards: b3's deposit settles
    in shard 0 (its account's partition), its purchase in shard 1 (H100-80G.GZ's), and the API
    answers the sum, to the fen."""
    async with (
        fresh_database(postgres_url) as home_url,
        fresh_database(second_server) as other_url,
    ):
        settings = settings_for(tmp_path, database_url=home_url, CX_SETTLEMENT_SHARDS=other_url)
        async with running_exchange(settings) as exchange:
            assert set(exchange.runtime.running) >= {"settlement", "settlement-1"}
            post = exchange.client.post
            deposit = {"kind": "cash", "amount": 1_000_000}
            assert (await post("/v1/accounts/b3/deposits", json=deposit)).is_success
            # b3's enterprise registers in the registry's partition (0, shard 0).
            await register(exchange, "b3")
            capacity = {"kind": "capacity", "symbol": GZ, "quantity": 10}
            assert (await post("/v1/accounts/s1/deposits", json=capacity)).is_success
            for account, side in (("s1", "sell"), ("b3", "buy")):
                order = {"account_id": account, "symbol": GZ, "side": side, "price": 1850}
                response = await post("/v1/orders", json=order | {"quantity": 4})
                assert response.status_code == 201, response.text
            bought_id = response.json()["order_id"]

            settled_cash = {"available": 1_000_000 - 4 * 1850, "held": 0}

            async def bought() -> dict[str, Any] | None:
                # The shards settle on their own: the purchase (shard 1) may be read before the
                # deposit (shard 0) is, so the answer is awaited until both are in it.
                answer = (await exchange.client.get("/v1/accounts/b3")).json()
                settled = answer.get("positions") and answer.get("cash") == settled_cash
                return answer if settled else None

            account = await eventually(bought, "b3's deposit and purchase to settle")
            assert account["cash"] == settled_cash
            assert account["positions"] == [{"symbol": GZ, "quantity": 4}]
            other = open_event_store(other_url)
            try:
                async with other.engine.connect() as connection:
                    part = (
                        await connection.execute(
                            select(cash_balances.c.available).where(
                                cash_balances.c.account_id == "b3"
                            )
                        )
                    ).scalar_one()
            finally:
                await other.close()
            assert part == -4 * 1850
            await _check_invoice_names_the_enterprise(exchange, bought_id, other_url)


async def _check_invoice_names_the_enterprise(
    exchange: RunningExchange, order_id: str, other_url: str
) -> None:
    """The purchase settled in shard 1 is invoiced to the enterprise b3 registered, whose
    registration settled in shard 0 only; b3 registering as another enterprise after it
    bought changes the invoice of that purchase in neither the API nor the CLI."""
    b3 = await exchange.as_("b3")

    async def registered() -> bool:
        return (await b3.get("/v1/accounts/b3/enterprise")).status_code == 200

    await eventually(registered, "b3's registration to settle")
    later = {
        "name": "b3 新壳有限公司",
        "uscc": uscc_of("b3-later"),
        "kind": "sme",
        "city": "hangzhou",
    }
    again = await b3.post("/v1/accounts/b3/enterprise", json=later)
    assert again.status_code == 201, again.text

    async def registered_again() -> bool:
        answer = await b3.get("/v1/accounts/b3/enterprise")
        return answer.status_code == 200 and answer.json()["uscc"] == later["uscc"]

    await eventually(registered_again, "b3's second registration to settle")
    other = open_event_store(other_url)
    try:
        async with other.engine.connect() as connection:
            there = [
                (await connection.execute(select(func.count()).select_from(table))).scalar()
                for table in (enterprises, enterprise_registrations)
            ]
    finally:
        await other.close()
    assert there == [0, 0]
    invoice = await b3.get(f"/v1/orders/{order_id}/invoice")
    assert invoice.status_code == 200, invoice.text
    assert invoice.json()["buyer"] == {
        "account_id": "b3",
        "name": "b3 科技有限公司",
        "uscc": uscc_of("b3"),
    }
    assert [(i["quantity"], i["unit_price"]) for i in invoice.json()["items"][:1]] == [(4, 1850)]
    # `cx report invoice` reads every shard alike.
    written = exchange.runtime.settings.data_dir / "invoice.json"
    done = await asyncio.to_thread(
        cli._invoice_report, exchange.runtime.settings, order_id, "json", written
    )
    assert done == 0
    assert json.loads(written.read_text())["buyer"] == invoice.json()["buyer"]
