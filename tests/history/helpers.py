"""Helpers for tests of the event history: a log clock the test moves, the `cx` command line on
an exchange's event store, and funded participants acting through the API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httpx

from cx.settings import Settings
from tests.e2e.harness import RunningExchange

ROOT = Path(__file__).resolve().parents[2]
GZ0 = "H100-80G.GZ.20271201T00"


class Clock:
    """A log clock the test moves forward (from the wall clock's time at the start)."""

    def __init__(self) -> None:
        self.now_ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        """Move the log time on by `ms`."""
        self.now_ms += ms


def cx(settings: Settings, *args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run the `cx` command line on the exchange's configured event store (with the variables
    `environment` sets besides)."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env.update(environment)
    env["CX_DATA_DIR"] = str(settings.data_dir)
    # The replica follows matching's partitions: the exchange's count, not the default.
    env["CX_MARKET_PARTITIONS"] = str(settings.market_partitions)
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    return subprocess.run(
        [sys.executable, "-m", "cx.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def ok(response: Awaitable[httpx.Response], status: int = 201) -> dict[str, Any]:
    """The answer's JSON, once its status is `status`."""
    answer = await response
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def funded_provider(exchange: RunningExchange, *symbols: str) -> httpx.AsyncClient:
    """Provider `p` with 100,000 fen and 20 units of each contract."""
    client = await exchange.as_("p", "provider")
    await ok(client.post("/v1/accounts/p/deposits", json={"kind": "cash", "amount": 100_000}))
    for symbol in symbols:
        capacity = {"kind": "capacity", "symbol": symbol, "quantity": 20}
        await ok(client.post("/v1/accounts/p/deposits", json=capacity))
    return client


async def funded_buyer(exchange: RunningExchange, name: str = "b") -> httpx.AsyncClient:
    """Buyer `name` with 1,000,000 fen."""
    client = await exchange.as_(name)
    deposit = {"kind": "cash", "amount": 1_000_000}
    await ok(client.post(f"/v1/accounts/{name}/deposits", json=deposit))
    return client


def order(side: str, price: int, quantity: int, symbol: str = GZ0, **options: Any) -> Any:
    """The JSON of `POST /v1/orders`."""
    return {"symbol": symbol, "side": side, "price": price, "quantity": quantity, **options}
