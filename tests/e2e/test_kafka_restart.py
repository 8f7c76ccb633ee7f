"""A Kafka broker restart mid-run: producers and consumers recover, nothing is lost or doubled.

The exchange (risk, matching, settlement, market data and the API, in this process) runs on a
private single-node broker (tests/e2e/private_kafka.py) and the shared PostgreSQL. Buyers and
providers place orders through the API at a steady pace, each with a client order id; a request
that fails while the broker is away is retried with the same id, as a client would. Mid-run the
broker is stopped (SIGTERM, a controlled shutdown) and started again on the same port and data.

Afterwards: every order the API accepted is settled exactly once, no order id was accepted
twice, the audit of the event store finds nothing (trades settled once on both sides, cash and
capacity conserved, no hold outliving its order, ledger agrees with the events), the balances
add up to the deposits, and each stage's state equals a clean replay of its input topic.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.keys import Role
from cx.runtime import ExchangeRuntime
from exchange.domain.catalogue import default_catalogue
from settlement import projections as tables
from settlement.audit import audit
from tests.conftest import fresh_database
from tests.e2e.harness import (
    assert_stages_match_replay,
    eventually,
    free_port,
    running_exchange,
    settings_for,
    settle,
)
from tests.e2e.private_kafka import private_kafka

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

SYMBOLS = ("H100-80G.GZ.20271201T00", "A100-80G.NMG.20271201T01")
BUYERS = ("rb-1", "rb-2", "rb-3")
PROVIDERS = ("rp-1", "rp-2")
CASH = 10**9
CAPACITY = 10_000
BEFORE = 40  # orders answered before the broker stops
AFTER = 40  # orders answered after it is back
MAX_ORDERS = 2_000
LOAD_DEADLINE_S = 240.0
PARTITIONS = 3
OUTAGE_S = 8.0


class Load:
    """Places orders through the API until stopped, retrying each until it gets an answer."""

    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.rejected: list[str] = []
        self.answers: Counter[int] = Counter()
        self.retries = 0
        self.placed = 0
        self.stop = asyncio.Event()
        self.spans: list[tuple[float, float]] = []
        """When each request was sent and answered (loop time)."""

    def answered(self) -> int:
        return len(self.accepted) + len(self.rejected)

    async def run(self, client: httpx.AsyncClient, account: str, side: str, n: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOAD_DEADLINE_S
        sequence = 0
        while not self.stop.is_set() and self.placed < MAX_ORDERS:
            sequence += 1
            self.placed += 1
            body = {
                "symbol": SYMBOLS[(sequence + n) % len(SYMBOLS)],
                "side": side,
                "price": 1800 + 10 * ((sequence * 7 + n) % 5 - 2),
                "quantity": 1 + (sequence + n) % 3,
                "client_order_id": f"{account}-{sequence}",
            }
            while True:
                assert loop.time() < deadline, f"order {body} got no answer in time"
                sent = loop.time()
                try:
                    response = await client.post("/v1/orders", json=body, timeout=60)
                except httpx.TransportError:
                    response = None
                self.spans.append((sent, loop.time()))
                if response is not None:
                    self.answers[response.status_code] += 1
                    if response.status_code == 201:
                        self.accepted.append(response.json()["order_id"])
                        break
                    if response.status_code == 422:
                        self.rejected.append(response.json()["order_id"])
                        break
                    # 202: not decided in time; 5xx: the log is away. Same id again.
                    assert response.status_code in {202, 500, 503}, response.text
                self.retries += 1
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.02)


async def _fund(clients: dict[str, httpx.AsyncClient]) -> None:
    for account in BUYERS:
        answer = await clients[account].post(
            f"/v1/accounts/{account}/deposits", json={"kind": "cash", "amount": CASH}
        )
        assert answer.status_code == 201, answer.text
    for account in PROVIDERS:
        for symbol in SYMBOLS:
            answer = await clients[account].post(
                f"/v1/accounts/{account}/deposits",
                json={"kind": "capacity", "symbol": symbol, "quantity": CAPACITY},
            )
            assert answer.status_code == 201, answer.text


async def _balances_add_up(clients: dict[str, httpx.AsyncClient], engine: AsyncEngine) -> None:
    """Cash (with what waits in escrow for delivery) and units (capacity plus positions) add
    up to what was deposited."""
    async with engine.connect() as connection:
        balances = await connection.execute(select(tables.ledger_balances))
        cash = sum(row.balance for row in balances if row.account.startswith("escrow:"))
    units: Counter[str] = Counter()
    for account, account_client in clients.items():
        state = (await account_client.get(f"/v1/accounts/{account}")).json()
        cash += state["cash"]["available"] + state["cash"]["held"]
        for row in state["capacity"]:
            units[row["symbol"]] += row["available"] + row["held"]
        for row in state["positions"]:
            units[row["symbol"]] += row["quantity"]
    assert cash == CASH * len(BUYERS)
    assert units == dict.fromkeys(SYMBOLS, CAPACITY * len(PROVIDERS))


async def test_broker_restart_mid_run_loses_and_repeats_nothing(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    # kafka_bootstrap only asserts Kafka is meant to be here; the restarted broker is private.
    del kafka_bootstrap
    started = time.monotonic()
    with private_kafka(free_port(), free_port()) as broker:
        async with fresh_database(postgres_url) as database_url:
            settings = settings_for(
                tmp_path,
                kafka=broker.bootstrap,
                database_url=database_url,
                CX_COMMAND_PARTITIONS=PARTITIONS,
                CX_MARKET_PARTITIONS=PARTITIONS,
                CX_SNAPSHOT_EVERY=50,
            )
            load = Load()
            async with running_exchange(settings) as exchange:
                clients = {a: await exchange.as_(a, Role.BUYER) for a in BUYERS}
                clients |= {a: await exchange.as_(a, Role.PROVIDER) for a in PROVIDERS}
                await _fund(clients)
                tasks = [
                    asyncio.create_task(load.run(clients[a], a, "buy", n))
                    for n, a in enumerate(BUYERS)
                ] + [
                    asyncio.create_task(load.run(clients[a], a, "sell", n))
                    for n, a in enumerate(PROVIDERS)
                ]
                try:

                    async def answered(count: int) -> bool:
                        for task in tasks:
                            if task.done():
                                task.result()  # a failed loader fails the test now
                        return load.answered() >= count

                    await eventually(lambda: answered(BEFORE), "orders before the stop", 120)
                    broker.stop()
                    away = asyncio.get_running_loop().time()
                    stopped_at = load.answered()
                    # Orders keep coming while the broker is away, longer than the consumer
                    # groups' session timeout (6 s), so the groups must be rebuilt.
                    await asyncio.sleep(OUTAGE_S)
                    broker.start()
                    back = asyncio.get_running_loop().time()
                    await eventually(
                        lambda: answered(stopped_at + AFTER), "orders after the restart", 180
                    )
                finally:
                    load.stop.set()
                    results = await asyncio.gather(*tasks, return_exceptions=True)
                errors = [r for r in results if isinstance(r, BaseException)]
                assert not errors, errors

                await settle(exchange.runtime, timeout_s=180)
                runtime = exchange.runtime
                live = {
                    name: {p: runtime.running[name].partition_hash(p) for p in range(PARTITIONS)}
                    for name in ("risk", "matching")
                }
                await _every_accepted_order_settled_once(runtime, load)
                await _balances_add_up(clients, runtime.store.engine)
                report = await audit(runtime.store, default_catalogue())
                assert report.discrepancies == [], [str(d) for d in report.discrepancies]
                assert report.trades > 0

            # After the clean stop: a fresh single-process replay of each input topic gives
            # the state the live stages ended with (and stored in their last snapshots).
            runtime = await ExchangeRuntime.open(settings)
            try:
                replayed = await assert_stages_match_replay(runtime, PARTITIONS)
            finally:
                await runtime.close()
            assert replayed == live
    assert broker.starts == 2
    # Every loader had a request in flight while the broker was away, answered after.
    during = [span for span in load.spans if span[0] < back and span[1] > away]
    assert len(during) >= len(BUYERS) + len(PROVIDERS), during
    print(
        f"\nbroker restart: {load.answered()} orders answered ({len(load.accepted)} accepted, "
        f"{len(load.rejected)} rejected), {len(during)} in flight while the broker was "
        f"away, {load.retries} retries, answers {dict(load.answers)}, "
        f"{report.trades} trades, {report.events} events, "
        f"{time.monotonic() - started:.0f}s"
    )


async def _every_accepted_order_settled_once(runtime: ExchangeRuntime, load: Load) -> None:
    """Each accepted order id has exactly one OrderAccepted event; no other order does."""
    assert len(set(load.accepted)) == len(load.accepted), "an order id was accepted twice"
    accepted: Counter[str] = Counter()
    position = 0
    for _ in range(10_000):  # bounded: pages of 1,000 events
        page = await runtime.store.read_all(position, 1000)
        if not page:
            break
        for event in page:
            if event.type == "OrderAccepted":
                accepted[event.data["order_id"]] += 1
        position = page[-1].position
    doubled = {order_id: n for order_id, n in accepted.items() if n > 1}
    assert doubled == {}
    assert set(accepted) == set(load.accepted)
