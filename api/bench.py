"""`cx bench api` and `cx bench fanout`: the API under load, against references in the same run.

The exchange runs as a `cx serve` process on its embedded default (rate limits raised out of
the way); the load comes from this process.
- api: orders per second through `POST /v1/orders` with N concurrent clients, each with its own
  key; the reference is the same clients calling `GET /v1/health`, which answers from a
  status reading cached for half a second.
- fanout: M WebSocket subscribers to one contract's depth while orders change its book;
  delivery latency is the time from an update's log time to its arrival at a subscriber, p99
  over every delivery. The reference is a single subscriber in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = "H100-80G.GZ.20271201T00"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def _exchange() -> AsyncIterator[tuple[str, Path]]:
    """A `cx serve` on the embedded default in a fresh folder; yields its URL and folder."""
    folder = Path(tempfile.mkdtemp(prefix="cx-bench-"))
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env.update(
        {
            "CX_DATA_DIR": str(folder),
            "CX_API_PORT": str(port),
            "CX_API_RATE": "1000000",
            "CX_API_BURST": "1000000",
        }
    )
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cx.cli",
        "serve",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/v1/health")).json().get("market_data_ready"):
                        break
                await asyncio.sleep(0.1)
        yield url, folder
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)


def _key(folder: Path, account: str, role: str) -> str:
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
    }
    env["CX_DATA_DIR"] = str(folder)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cx.cli",
            "keys",
            "create",
            "--account",
            account,
            "--role",
            role,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


async def _participants(url: str, folder: Path, count: int) -> list[httpx.AsyncClient]:
    """`count` funded buyers and providers alternately, each with its own key and client."""
    clients = []
    for n in range(count):
        role = "buyer" if n % 2 == 0 else "provider"
        account = f"{role}-{n}"
        key = await asyncio.to_thread(_key, folder, account, role)
        client = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        deposit = (
            {"kind": "cash", "amount": 10**12}
            if role == "buyer"
            else {"kind": "capacity", "symbol": SYMBOL, "quantity": 10**8}
        )
        response = await client.post(f"/v1/accounts/{account}/deposits", json=deposit)
        response.raise_for_status()
        clients.append(client)
    return clients


async def _hammer(clients: list[httpx.AsyncClient], seconds: float, orders: bool) -> int:
    """Requests completed by all clients in `seconds`: orders, or the (cached) health check."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def one(n: int, client: httpx.AsyncClient) -> None:
        nonlocal done
        side = "buy" if n % 2 == 0 else "sell"
        step = 0
        while time.perf_counter() < deadline:
            if orders:
                step += 1
                price = 1800 + (step % 7 - 3) * 10
                body = {"symbol": SYMBOL, "side": side, "price": price, "quantity": 1}
                response = await client.post("/v1/orders", json=body)
                if response.status_code not in {201, 202}:
                    raise RuntimeError(f"the API refused a bench order: {response.text}")
            else:
                (await client.get("/v1/health")).raise_for_status()
            done += 1

    await asyncio.gather(*(one(n, c) for n, c in enumerate(clients)))
    return done


async def bench_api(clients_count: int, seconds: float) -> dict[str, Any]:
    """Orders per second through REST, against the rate of the cheapest request (health)."""
    async with _exchange() as (url, folder):
        clients = await _participants(url, folder, clients_count)
        try:
            await _hammer(clients, 1.0, orders=True)  # warm up
            orders = await _hammer(clients, seconds, orders=True)
            noop = await _hammer(clients, seconds, orders=False)
        finally:
            for client in clients:
                await client.aclose()
    return {
        "bench": "api",
        "clients": clients_count,
        "seconds": seconds,
        "orders_per_s": round(orders / seconds),
        "noop_requests_per_s": round(noop / seconds),
        "ratio": round(orders / noop, 3),
    }


async def _latencies(url: str, subscribers: int, updates: int, rate: float) -> list[float]:
    """Delivery latencies (ms) of depth updates to every subscriber."""
    ws_url = url.replace("http", "ws") + "/v1/stream"
    latencies: list[float] = []
    received = 0
    ready = asyncio.Event()
    subscribed = 0
    done = asyncio.Event()

    async def subscriber() -> None:
        nonlocal received, subscribed
        async with websockets.connect(ws_url, max_queue=None) as socket:
            await socket.send(
                json.dumps({"op": "subscribe", "symbols": [SYMBOL], "channels": ["depth"]})
            )
            subscribed += 1
            if subscribed == subscribers:
                ready.set()
            while not done.is_set():
                try:
                    # asyncio.timeout, not wait_for: the 1,000 clients share this process's
                    # core, and a task per message would add its cost to every latency.
                    async with asyncio.timeout(1.0):
                        raw = await socket.recv()
                except TimeoutError:
                    continue
                message = orjson.loads(raw)
                if message.get("type") == "depth" and message.get("ts"):
                    latencies.append(time.time() * 1000 - message["ts"])
                    received += 1
                    if received >= subscribers * updates:
                        done.set()

    tasks = [asyncio.create_task(subscriber()) for _ in range(subscribers)]
    await asyncio.wait_for(ready.wait(), 120)
    await asyncio.sleep(0.5)
    return await _drive(url, tasks, done, updates, rate, latencies)


async def _drive(
    url: str,
    tasks: list[asyncio.Task[None]],
    done: asyncio.Event,
    updates: int,
    rate: float,
    latencies: list[float],
) -> list[float]:
    folder = Path(os.environ["CX_BENCH_FOLDER"])
    key = await asyncio.to_thread(_key, folder, f"maker-{len(tasks)}", "provider")
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        deposit = {"kind": "capacity", "symbol": SYMBOL, "quantity": 10**8}
        (
            await client.post(f"/v1/accounts/maker-{len(tasks)}/deposits", json=deposit)
        ).raise_for_status()
        for n in range(updates):
            body = {"symbol": SYMBOL, "side": "sell", "price": 2000 + (n % 50) * 10, "quantity": 1}
            (await client.post("/v1/orders", json=body)).raise_for_status()
            await asyncio.sleep(1 / rate)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 60)
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")


async def bench_fanout(subscribers: int, updates: int, rate: float) -> dict[str, Any]:
    """p99 delivery latency of depth updates to many subscribers, against one subscriber."""
    async with _exchange() as (url, folder):
        os.environ["CX_BENCH_FOLDER"] = str(folder)
        alone = await _latencies(url, 1, updates, rate)
        many = await _latencies(url, subscribers, updates, rate)
    return {
        "bench": "fanout",
        "subscribers": subscribers,
        "updates": updates,
        "updates_per_s": rate,
        "delivered": len(many),
        "expected": subscribers * updates,
        "p50_ms": round(sorted(many)[len(many) // 2], 1) if many else None,
        "p99_ms": round(_p99(many), 1),
        "one_subscriber_p99_ms": round(_p99(alone), 1),
        "ratio": round(_p99(many) / max(_p99(alone), 0.1), 2),
        "goal_p99_ms": 100,
    }


def run_api(clients: int, seconds: float) -> str:
    """Run the API bench and return its JSON line."""
    return json.dumps(asyncio.run(bench_api(clients, seconds)))


def run_fanout(subscribers: int, updates: int, rate: float) -> str:
    """Run the fan-out bench and return its JSON line."""
    return json.dumps(asyncio.run(bench_fanout(subscribers, updates, rate)))
