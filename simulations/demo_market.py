"""The demo's built-in market: a few providers and buyers trading the listed contracts.

Agents send real commands into the commands topic, so everything they do passes through risk,
matching and settlement like any participant's orders. Prices follow a seeded random walk
around each contract's reference price; providers never sell below cost and buyers never pay
above their value. Order and deposit ids are fresh per run (uuid4), so a resumed demo never
collides with the ids of the history it resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from exchange.domain.catalogue import Catalogue
from exchange.domain.messages import (
    CancelOrder,
    Command,
    DepositCapacity,
    DepositFunds,
    PlaceOrder,
)

REFERENCE_PRICES = {"H100-80G": 1800, "A100-80G": 1100, "CPU": 12}
"""Reference prices per unit in fen (18.00 CNY per H100 card-hour, 0.12 CNY per core-hour)."""
PROVIDERS = ("provider-gz-1", "provider-nmg-1", "provider-yrd-1")
BUYERS = ("sme-hangzhou-1", "opc-ningbo-1", "lab-shanghai-1")
CAPACITY_TOP_UP = 200
CASH_TOP_UP = 50_000_000


class Exchange(Protocol):
    """The exchange the demo trades on: its contracts and the way in for commands."""

    @property
    def catalogue(self) -> Catalogue:
        """The listed contracts."""

    async def submit(self, command: Command) -> None:
        """Append a command to the commands topic."""


@dataclass
class Agent:
    """One participant of the demo and the orders it placed and may cancel."""

    account_id: str
    side: str
    open_orders: list[str] = field(default_factory=list)
    orders_placed: int = 0


class DemoMarket:
    """Drives a small market through the real pipeline at a few orders per second."""

    def __init__(self, runtime: Exchange, seed: int = 7, orders_per_second: float = 8.0):
        self.runtime = runtime
        self.random = random.Random(seed)
        self.interval = 1.0 / orders_per_second
        self.agents = [Agent(a, "sell") for a in PROVIDERS] + [Agent(a, "buy") for a in BUYERS]
        self.specs = {spec.symbol: spec for spec in runtime.catalogue}
        self.mids = {
            symbol: REFERENCE_PRICES.get(spec.resource_class.code, 1000)
            for symbol, spec in self.specs.items()
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Fund every agent, then trade until `stop` is set."""
        for agent in self.agents:
            await self._top_up(agent)
        while not stop.is_set():
            await self._step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def _top_up(self, agent: Agent) -> None:
        if agent.side == "buy":
            await self.runtime.submit(
                DepositFunds(
                    deposit_id=f"demo-{uuid.uuid4().hex}",
                    account_id=agent.account_id,
                    amount=CASH_TOP_UP,
                )
            )
            return
        for symbol in self.mids:
            await self.runtime.submit(
                DepositCapacity(
                    deposit_id=f"demo-{uuid.uuid4().hex}",
                    account_id=agent.account_id,
                    symbol=symbol,
                    quantity=CAPACITY_TOP_UP,
                )
            )

    async def _step(self) -> None:
        agent = self.random.choice(self.agents)
        if agent.open_orders and self.random.random() < 0.25:
            order_id = agent.open_orders.pop(self.random.randrange(len(agent.open_orders)))
            await self.runtime.submit(CancelOrder(order_id=order_id, account_id=agent.account_id))
            return
        symbol = self.random.choice(list(self.mids))
        spec = self.specs[symbol]
        tick = spec.tick_size
        reference = REFERENCE_PRICES.get(spec.resource_class.code, 1000)
        drift = self.random.choice((-1, 0, 1)) * tick
        self.mids[symbol] = min(
            max(self.mids[symbol] + drift, reference * 7 // 10), reference * 13 // 10
        )
        mid = self.mids[symbol]
        # Buyers bid around the mid, sellers ask around it; a third of orders cross the spread.
        offset = self.random.randint(-3, 3) * tick
        price = mid + offset if agent.side == "buy" else mid - offset
        price = max(tick, price - price % tick)
        order_id = f"demo-{uuid.uuid4().hex}"
        await self.runtime.submit(
            PlaceOrder(
                order_id=order_id,
                account_id=agent.account_id,
                symbol=symbol,
                side="buy" if agent.side == "buy" else "sell",
                price=price,
                quantity=self.random.randint(1, 8),
            )
        )
        agent.open_orders.append(order_id)
        del agent.open_orders[:-20]
        agent.orders_placed += 1
        if agent.orders_placed % 40 == 0:
            await self._top_up(agent)
