"""A steady load of orders through the API, and what must hold of it afterwards.

Buyers and providers place orders at a steady pace, each with a client order id; a request
that fails while a service is away is retried with the same id, as a client would. Shared by
the tests that take a service away under load (tests/e2e/test_kafka_restart.py,
tests/failover).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from sqlalchemy import select

from api.keys import Role
from cx.runtime import ExchangeRuntime
from settlement import projections as tables
from tests.e2e.harness import RunningExchange

SYMBOLS = ("H100-80G.GZ.20271201T00", "A100-80G.NMG.20271201T01", "H100-80G.YRD.20271201T00")
"""Families of two market partitions (of 3): of both settlement shards when there are two."""
BUYERS = ("rb-1", "rb-2", "rb-3")
PROVIDERS = ("rp-1", "rp-2")
CASH = 10**9
CAPACITY = 10_000
MAX_ORDERS = 2_000
LOAD_DEADLINE_S = 240.0


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


class Loaders:
    """Every buyer and provider placing orders through `load` at once, each its own task."""

    def __init__(self, load: Load, clients: dict[str, httpx.AsyncClient]) -> None:
        self.load = load
        self.tasks = [
            asyncio.create_task(load.run(clients[a], a, "buy", n)) for n, a in enumerate(BUYERS)
        ] + [
            asyncio.create_task(load.run(clients[a], a, "sell", n)) for n, a in enumerate(PROVIDERS)
        ]

    async def answered(self, count: int) -> bool:
        """Whether `count` orders are answered; a loader that failed fails the test now."""
        for task in self.tasks:
            if task.done():
                task.result()
        return self.load.answered() >= count

    async def stop(self) -> None:
        """Stop placing orders; fail if any loader failed."""
        self.load.stop.set()
        results = await asyncio.gather(*self.tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors


async def traders(exchange: RunningExchange) -> dict[str, httpx.AsyncClient]:
    """A client for each buyer and provider of the load, funded (`fund`)."""
    clients = {a: await exchange.as_(a, Role.BUYER) for a in BUYERS}
    clients |= {a: await exchange.as_(a, Role.PROVIDER) for a in PROVIDERS}
    await fund(clients)
    return clients


async def fund(clients: dict[str, httpx.AsyncClient]) -> None:
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


async def balances_add_up(clients: dict[str, httpx.AsyncClient], runtime: ExchangeRuntime) -> None:
    """Cash (with what waits in escrow for delivery, in every settlement shard) and units
    (capacity plus positions) add up to what was deposited."""
    cash = 0
    for shard in runtime.shards:
        async with shard.engine.connect() as connection:
            balances = await connection.execute(select(tables.ledger_balances))
            cash += sum(row.balance for row in balances if row.account.startswith("escrow:"))
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


async def every_accepted_order_settled_once(runtime: ExchangeRuntime, load: Load) -> None:
    """Each accepted order id has exactly one OrderAccepted event over every settlement shard;
    no other order does."""
    assert len(set(load.accepted)) == len(load.accepted), "an order id was accepted twice"
    accepted: Counter[str] = Counter()
    for shard in runtime.shards:
        position = 0
        for _ in range(10_000):  # bounded: pages of 1,000 events
            page = await shard.read_all(position, 1000)
            if not page:
                break
            for event in page:
                if event.type == "OrderAccepted":
                    accepted[event.data["order_id"]] += 1
            position = page[-1].position
    doubled = {order_id: n for order_id, n in accepted.items() if n > 1}
    assert doubled == {}
    assert set(accepted) == set(load.accepted)
