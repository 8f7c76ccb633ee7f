"""Soak: a steady load through the embedded pipeline and the API, with memory watched.

For CX_SOAK_SECONDS (default 45, so the whole suite stays short; `make soak` runs 600)
buyers and providers place
crossing orders (they trade at once, so the books stay small), rest and cancel others, read
their accounts and books, and a WebSocket client follows the quotes and trades. Every second
the test samples the process's resident memory (VmRSS) and what Python has allocated
(tracemalloc), with how many orders were answered.

The embedded log keeps every record in memory, and the exchange remembers every order id it
ever saw (a reused id is refused), so memory grows with the history by design. What must not
happen is growth beyond that. After a warm-up (the first fifth), the run is split in two halves:

- Python's allocations may grow by at most GROWTH_PER_ORDER bytes per order answered in the
  second half, and by at most ACCELERATION times the first half's rate (plus SLACK_BYTES);
- resident memory may grow in the second half by at most what Python's allocations grew plus
  RSS_SLACK_BYTES (allocator arenas, SQLite's page cache).

The figures are printed. A misconfigured run (CX_SOAK_SECONDS not a number of seconds >= 20)
fails; it never skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import websockets

from api.keys import Role
from exchange.domain.catalogue import default_catalogue
from settlement.audit import audit
from tests.e2e.harness import running_exchange, settings_for, settle

pytestmark = pytest.mark.e2e

GROWTH_PER_ORDER = 16_384
"""Bytes of Python allocations one answered order may add for good: its records in the
embedded log (command, acceptance, fills going back to risk, events), the ids remembered,
its settled rows' cache. Measured near 5 KB; the bound leaves room, a leak of whole
requests or responses does not fit in it for long."""
ACCELERATION = 2.0
SLACK_BYTES = 8 << 20
RSS_SLACK_BYTES = 48 << 20
ORDERS_PER_S = 40
"""Offered load: orders a second (half of them pairs that trade)."""
MIN_ORDERS_PER_S = 10
SYMBOLS = ("H100-80G.GZ.20271201T00", "A100-80G.NMG.20271201T00", "CPU.GZ.20271201T00")


def _soak_seconds() -> float:
    raw = os.environ.get("CX_SOAK_SECONDS", "45")
    try:
        seconds = float(raw)
    except ValueError:
        pytest.fail(f"CX_SOAK_SECONDS={raw!r} is not a number of seconds")
    if not 20 <= seconds <= 24 * 3600:
        pytest.fail(f"CX_SOAK_SECONDS={raw!r}: a soak needs 20 s to 24 h")
    return seconds


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass
class Sample:
    t: float
    rss: int
    traced: int
    orders: int


@dataclass
class Soak:
    answered: int = 0
    accepted: int = 0
    cancelled: int = 0
    reads: int = 0
    messages: int = 0
    samples: list[Sample] = field(default_factory=list)
    mid_snapshot: tracemalloc.Snapshot | None = None


async def _trader(
    soak: Soak,
    buyer: httpx.AsyncClient,
    seller: httpx.AsyncClient,
    n: int,
    deadline: float,
    pace_s: float,
) -> None:
    """Places a crossing pair, a resting order it then cancels, and reads, at a steady pace."""
    loop = asyncio.get_running_loop()
    step = 0
    while loop.time() < deadline and step < 1_000_000:
        step += 1
        began = loop.time()
        symbol = SYMBOLS[(n + step) % len(SYMBOLS)]
        tick = 1 if symbol.startswith("CPU") else 10
        price = (150 + (step % 7)) * tick
        for client, side in ((seller, "sell"), (buyer, "buy")):
            order = {"symbol": symbol, "side": side, "price": price, "quantity": 1 + step % 3}
            response = await client.post("/v1/orders", json=order)
            assert response.status_code == 201, response.text
            soak.answered += 1
            soak.accepted += 1
        if step % 4 == 0:
            resting = {"symbol": symbol, "side": "buy", "price": tick, "quantity": 1}
            response = await buyer.post("/v1/orders", json=resting)
            assert response.status_code == 201, response.text
            soak.answered += 1
            order_id = response.json()["order_id"]
            cancelled = await buyer.delete(f"/v1/orders/{order_id}")
            assert cancelled.status_code == 200, cancelled.text
            soak.cancelled += 1
        if step % 5 == 0:
            assert (await buyer.get(f"/v1/contracts/{symbol}/book")).status_code == 200
            assert (await buyer.get("/v1/orders")).status_code == 200
            soak.reads += 2
        await asyncio.sleep(max(0.0, pace_s - (loop.time() - began)))


async def _follower(soak: Soak, url: str, stop: asyncio.Event) -> None:
    async with websockets.connect(url) as socket:
        subscribe = {"op": "subscribe", "symbols": list(SYMBOLS), "channels": ["quote", "trades"]}
        await socket.send(json.dumps(subscribe))
        while not stop.is_set():
            try:
                await asyncio.wait_for(socket.recv(), 0.5)
            except TimeoutError:
                continue
            soak.messages += 1


async def _sampler(soak: Soak, stop: asyncio.Event, seconds: float) -> None:
    started = time.monotonic()
    while not stop.is_set():
        if soak.mid_snapshot is None and time.monotonic() - started >= 0.6 * seconds:
            soak.mid_snapshot = tracemalloc.take_snapshot()
        traced, _ = tracemalloc.get_traced_memory()
        soak.samples.append(Sample(time.monotonic() - started, _rss_bytes(), traced, soak.answered))
        await asyncio.sleep(1.0)


def _at(samples: list[Sample], fraction: float) -> Sample:
    return samples[min(len(samples) - 1, int(len(samples) * fraction))]


async def test_memory_stays_steady_under_a_steady_load(tmp_path: Path) -> None:
    seconds = _soak_seconds()
    traders = 4
    pace_s = traders * 2.5 / ORDERS_PER_S  # each step places 2.5 orders on average
    tracemalloc.start(1)
    soak = Soak()
    try:
        async with running_exchange(settings_for(tmp_path)) as exchange:
            clients = []
            for n in range(traders):
                buyer = await exchange.as_(f"soak-b{n}", Role.BUYER)
                seller = await exchange.as_(f"soak-s{n}", Role.PROVIDER)
                cash = {"kind": "cash", "amount": 10**13}
                deposit = await buyer.post(f"/v1/accounts/soak-b{n}/deposits", json=cash)
                assert deposit.status_code == 201
                for symbol in SYMBOLS:
                    capacity = {"kind": "capacity", "symbol": symbol, "quantity": 10**9}
                    deposit = await seller.post(f"/v1/accounts/soak-s{n}/deposits", json=capacity)
                    assert deposit.status_code == 201
                clients.append((buyer, seller))
            stop = asyncio.Event()
            url = exchange.base_url.replace("http", "ws") + "/v1/stream"
            background = [
                asyncio.create_task(_sampler(soak, stop, seconds)),
                asyncio.create_task(_follower(soak, url, stop)),
            ]
            deadline = asyncio.get_running_loop().time() + seconds
            try:
                await asyncio.gather(
                    *(
                        _trader(soak, buyer, seller, n, deadline, pace_s)
                        for n, (buyer, seller) in enumerate(clients)
                    )
                )
            finally:
                stop.set()
                await asyncio.gather(*background)
            end_snapshot = tracemalloc.take_snapshot()
            await settle(exchange.runtime, timeout_s=120)
            report = await audit(
                exchange.runtime.store,
                default_catalogue(),
                exchange.runtime.topics.market_partitions,
            )
            assert report.discrepancies == [], [str(d) for d in report.discrepancies]
    finally:
        tracemalloc.stop()

    samples = soak.samples
    assert len(samples) >= 15, f"only {len(samples)} samples"
    rate = soak.answered / seconds
    warm, mid, end = _at(samples, 0.2), _at(samples, 0.6), samples[-1]
    first = (mid.traced - warm.traced) / max(1, mid.orders - warm.orders)
    second = (end.traced - mid.traced) / max(1, end.orders - mid.orders)
    mb = 1 << 20
    print(
        f"\nsoak {seconds:.0f}s: {soak.answered} orders answered ({rate:.1f}/s), "
        f"{soak.cancelled} cancelled, {soak.reads} reads, {soak.messages} stream messages, "
        f"{report.trades} trades; RSS {warm.rss / mb:.1f} -> {mid.rss / mb:.1f} -> "
        f"{end.rss / mb:.1f} MB, Python {warm.traced / mb:.1f} -> {mid.traced / mb:.1f} -> "
        f"{end.traced / mb:.1f} MB; per order {first:.0f} B then {second:.0f} B"
    )
    assert soak.mid_snapshot is not None
    print("second half, where Python's allocations grew:")
    for stat in end_snapshot.compare_to(soak.mid_snapshot, "filename")[:6]:
        print(f"  {stat.size_diff / 1024:+9.0f} KiB  {stat.traceback[0].filename}")
    assert rate >= MIN_ORDERS_PER_S, f"the load reached only {rate:.1f} orders/s"
    assert soak.messages > 0
    assert second <= GROWTH_PER_ORDER, f"{second:.0f} B per order in the second half"
    growth = end.traced - mid.traced
    allowed = ACCELERATION * first * (end.orders - mid.orders) + SLACK_BYTES
    assert growth <= allowed, f"allocations grew {growth} B, faster than {allowed:.0f} B"
    assert end.rss - mid.rss <= max(0, growth) + RSS_SLACK_BYTES, (
        f"RSS grew {(end.rss - mid.rss) / mb:.1f} MB in the second half"
    )
