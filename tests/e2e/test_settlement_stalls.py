"""Settlement never stalls silently: an event it cannot apply stops only its partition, loudly.

On the embedded default and on Kafka and PostgreSQL: an event the ledger projection refuses (a
second `TradeExecuted` with an id already settled) is put on the events topic. Settlement
settles everything before it, stops that partition there and records why; `/v1/health`
answers 503 naming the stage, partition, event and lag; `GET /v1/admin/status` and
`cx status` report it; other partitions settle on and nothing after it in its partition is
applied. Once the operator sets the event aside, settlement goes on from the next one and the
audits are clean.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from cx_client import ExchangeClient

from cx.settings import Settings
from exchange.deadletters import read_dead_letters
from exchange.pipeline import partition_for
from tests.e2e.harness import RunningExchange, eventually, running_exchange, settle

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GZ0 = "H100-80G.GZ.20271201T00"
INJECTED = "injected:1:0"
"""The bad event's id, of the form `source:offset:n` every event id has."""


async def cx(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`cx ARGS` as an operator runs it beside the exchange, with the same settings (in a
    thread: the exchange in this event loop must go on meanwhile, holding no lock it waits
    for)."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env.update(
        CX_DATA_DIR=str(settings.data_dir),
        CX_TOPIC_PREFIX=settings.topic_prefix,
        CX_COMMAND_PARTITIONS=str(settings.command_partitions),
        CX_MARKET_PARTITIONS=str(settings.market_partitions),
    )
    if settings.kafka_bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cx.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _account_on(partition: int, partitions: int, other_than: int | None = None) -> str:
    """An account whose deposits' events go to events partition `partition` (or, with
    `other_than`, to any other partition)."""
    for n in range(1000):
        account = f"acct-{n}"
        found = partition_for(account, partitions)
        if (found == partition) if other_than is None else (found != other_than):
            return account
    raise AssertionError("no such account among the first thousand")


async def _deposit(exchange: RunningExchange, account: str, amount: int) -> None:
    client = await exchange.as_(account)
    body = {"kind": "cash", "amount": amount}
    answer = await client.post(f"/v1/accounts/{account}/deposits", json=body)
    assert answer.status_code == 201, answer.text


async def _inject_a_second_copy_of_the_trade(exchange: RunningExchange, partition: int) -> int:
    """A `TradeExecuted` reusing a settled trade's id under a new event id, put on the events
    topic: the ledger cannot store a second trade of that id. Returns its offset."""
    runtime = exchange.runtime
    (trade,) = [
        e for e in await runtime.store.read_stream(f"contract-{GZ0}") if e.type == "TradeExecuted"
    ]
    copy = {**trade.data, "event_id": INJECTED}
    producer = await runtime.log.producer()
    try:
        record = await producer.send_and_wait(runtime.topics.events, partition, orjson.dumps(copy))
    finally:
        await producer.close()
    return record.offset


async def _health(exchange: RunningExchange) -> tuple[int, dict[str, Any]]:
    answer = await exchange.anonymous.get("/v1/health")
    return answer.status_code, answer.json()


async def _stalled_health(exchange: RunningExchange) -> dict[str, Any] | None:
    status, body = await _health(exchange)
    return body if status == 503 and body["stalls"] else None


async def test_an_event_settlement_cannot_apply_stops_its_partition_loudly(
    exchange_settings: Settings,
) -> None:
    settings = exchange_settings
    partitions = settings.market_partitions
    async with running_exchange(settings) as exchange:
        runtime = exchange.runtime
        events = runtime.topics.events
        stalled = runtime.topics.market_partition(GZ0)
        behind = _account_on(stalled, partitions)
        elsewhere = _account_on(0, partitions, other_than=stalled)

        provider = await exchange.as_("p", "provider")
        capacity = {"kind": "capacity", "symbol": GZ0, "quantity": 2}
        assert (await provider.post("/v1/accounts/p/deposits", json=capacity)).status_code == 201
        await _deposit(exchange, "b", 10_000)
        sell = {"symbol": GZ0, "side": "sell", "price": 1_800, "quantity": 2}
        assert (await provider.post("/v1/orders", json=sell)).status_code == 201
        buy = {"symbol": GZ0, "side": "buy", "price": 1_800, "quantity": 2}
        assert (await (await exchange.as_("b")).post("/v1/orders", json=buy)).status_code == 201
        await settle(runtime)
        status, healthy = await _health(exchange)
        assert (status, healthy["status"], healthy["stalls"]) == (200, "ok", [])

        offset = await _inject_a_second_copy_of_the_trade(exchange, stalled)
        source = f"{events}:{stalled}:{offset}"
        await _deposit(exchange, behind, 700)  # after the bad event, in its partition
        await _deposit(exchange, elsewhere, 900)  # in another partition

        body = await eventually(lambda: _stalled_health(exchange), "health to report the stall")
        (stall,) = body["stalls"]
        assert (stall["stage"], stall["topic"], stall["partition"], stall["kind"]) == (
            "settlement",
            events,
            stalled,
            "cannot_apply",
        )
        assert (stall["offset"], stall["event_id"], stall["event_type"]) == (
            offset,
            INJECTED,
            "TradeExecuted",
        )
        assert stall["lag"] >= 2  # the bad event and the deposit after it
        assert "IntegrityError" in stall["detail"]
        assert (body["type"], body["status"]) == ("/problems/stalled", 503)
        assert f"settlement is stalled in {events}:{stalled} at offset {offset}" in body["detail"]
        answer = await exchange.anonymous.get("/v1/health")
        assert answer.headers["content-type"] == "application/problem+json"
        settled = [s for s in body["stages"] if s["stage"] == "settlement"]
        assert {(s["partition"], s["offset"]) for s in settled} >= {(stalled, offset)}

        # Other partitions settle on; nothing after the bad event in its partition is applied.
        async def settled_elsewhere() -> bool:
            answer = await (await exchange.as_(elsewhere)).get(f"/v1/accounts/{elsewhere}")
            return answer.status_code == 200 and answer.json()["cash"]["available"] == 900

        await eventually(settled_elsewhere, "the other partition to settle")
        waiting = await (await exchange.as_(behind)).get(f"/v1/accounts/{behind}")
        assert waiting.status_code == 404, waiting.text
        stored = await runtime.store.consumer_offsets("settlement")
        assert stored[(events, stalled)] == offset

        operator = await exchange.operator()
        report = (await operator.get("/v1/admin/status")).json()
        assert report["stalled"] is True
        assert [(s["kind"], s["offset"]) for s in report["stalls"]] == [("cannot_apply", offset)]
        assert report["stalls"][0]["since"].endswith("+08:00"), report
        async with ExchangeClient(exchange.base_url) as anyone:
            seen = await anyone.health()
        assert seen.status == "stalled"
        assert [(s.stage, s.partition, s.event_id) for s in seen.stalls] == [
            ("settlement", stalled, INJECTED)
        ]
        shown = await cx(settings, "status", "--json")
        assert shown.returncode == 1, shown.stdout + shown.stderr
        (reported,) = json.loads(shown.stdout)["stalls"]
        assert (reported["stage"], reported["partition"], reported["event_id"]) == (
            "settlement",
            stalled,
            INJECTED,
        )
        assert reported["lag"] >= 2
        printed = await cx(settings, "status")
        assert f"cx deadletters set-aside {source}" in printed.stdout, printed.stdout
        assert re.search(r"STALLED since \S+\+08:00:", printed.stdout), printed.stdout

        # The operator sets the event aside (with cx on one backend, the API on the other).
        refused = await operator.post(
            "/v1/admin/set-aside", json={"source": f"{events}:{stalled}:0", "reason": "x"}
        )
        assert refused.status_code == 404, refused.text
        if settings.kafka_bootstrap_servers:
            key = await exchange.key_for("operator")
            async with ExchangeClient(exchange.base_url, key) as client:
                assert (await client.status()).stalled
                done = await client.set_aside(source, "a duplicate trade")
            assert (done.status, done.event_id, done.set_aside_by) == (
                "requested",
                INJECTED,
                "operator",
            )
        else:
            aside = await cx(settings, "deadletters", "set-aside", source, "--reason", "duplicate")
            assert aside.returncode == 0, aside.stdout + aside.stderr

        await eventually(lambda: _healthy(exchange), "health to recover")
        await settle(runtime)
        answer = await (await exchange.as_(behind)).get(f"/v1/accounts/{behind}")
        assert answer.json()["cash"] == {"available": 700, "held": 0}
        letters = await read_dead_letters(runtime.log, runtime.topics.deadletters)
        assert [(letter.source, letter.stage) for letter in letters] == [(source, "settlement")]
        assert letters[0].reason.startswith("set aside by ")
        (listed,) = (await operator.get("/v1/admin/dead-letters")).json()
        by, why = (
            ("operator", "a duplicate trade")
            if settings.kafka_bootstrap_servers
            else (
                f"cx:{getpass.getuser()}",
                "duplicate",
            )
        )
        assert (listed["source"], listed["stage"], listed["reason"]) == (
            source,
            "settlement",
            letters[0].reason,
        )
        assert (listed["topic"], listed["partition"]) == (events, stalled)
        assert (listed["event_id"], listed["set_aside_by"], listed["set_aside_reason"]) == (
            INJECTED,
            by,
            why,
        )
        assert listed["set_aside_at"] is not None
        audited = (await operator.get("/v1/admin/audit")).json()
        assert audited["discrepancies"] == []
        assert (await operator.get("/v1/admin/status")).json()["stalls"] == []
    for scope in ("all", "ledger"):
        audit = await cx(settings, "audit", scope)
        assert audit.returncode == 0, audit.stdout + audit.stderr
    assert (await cx(settings, "status")).returncode == 0


async def _healthy(exchange: RunningExchange) -> bool:
    status, body = await _health(exchange)
    return status == 200 and body["status"] == "ok"
