"""Runs a whole exchange (every stage and the API) inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api.marketdata import MarketData
from exchange.log import TopicPartition
from exchange.node import serve
from exchange.runtime import STAGES, ExchangeRuntime
from exchange.settings import Settings

START_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def settings_for(
    data_dir: Path, kafka: str | None = None, database_url: str | None = None, prefix: str = ""
) -> Settings:
    """Settings of an exchange on its own port and topics; embedded when kafka/database unset."""
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        DATABASE_URL=database_url,
        CX_DATA_DIR=data_dir,
        CX_API_PORT=free_port(),
        CX_TOPIC_PREFIX=prefix or f"t{uuid.uuid4().hex[:12]}",
        CX_COMMAND_PARTITIONS=3,
        CX_MARKET_PARTITIONS=3,
    )


@dataclass
class RunningExchange:
    """An exchange serving in the background, its runtime, and an HTTP client for its API."""

    runtime: ExchangeRuntime
    market: MarketData
    client: httpx.AsyncClient
    base_url: str


@asynccontextmanager
async def running_exchange(settings: Settings) -> AsyncIterator[RunningExchange]:
    """Serve until the block ends, then stop cleanly and re-raise any stage's failure."""
    stop = asyncio.Event()
    captured: asyncio.Future[tuple[ExchangeRuntime, MarketData]] = (
        asyncio.get_running_loop().create_future()
    )

    async def capture(
        runtime: ExchangeRuntime, market: MarketData | None, _: asyncio.Event
    ) -> None:
        assert market is not None
        captured.set_result((runtime, market))
        await stop.wait()

    serving = asyncio.create_task(serve(settings, STAGES, extras=(capture,), stop=stop))
    base_url = f"http://{settings.api_host}:{settings.api_port}"
    try:
        runtime, market = await asyncio.wait_for(asyncio.shield(captured), START_TIMEOUT_S)
        async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
            await eventually(lambda: _answers(client), what="the API to answer")
            await asyncio.wait_for(market.ready.wait(), START_TIMEOUT_S)
            yield RunningExchange(runtime, market, client, base_url)
    finally:
        stop.set()
        await serving


async def _answers(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/v1/contracts")).status_code == 200
    except httpx.TransportError:
        return False


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 30.0
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after the timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def quiescent(runtime: ExchangeRuntime) -> bool:
    """True when risk, matching and settlement have consumed everything in their topics."""
    topics = runtime.topics
    stages = (
        ("risk", topics.commands, topics.command_partitions),
        ("matching", topics.orders, topics.market_partitions),
    )
    for group, topic, partitions in stages:
        consumer = await runtime.log.consumer(group_id=group)
        try:
            for partition in range(partitions):
                tp = TopicPartition(topic, partition)
                end = await consumer.end_offset(tp)
                if end and (await consumer.committed(tp) or 0) < end:
                    return False
        finally:
            await consumer.close()
    settled = await runtime.store.consumer_offsets("settlement")
    consumer = await runtime.log.consumer()
    try:
        for partition in range(topics.market_partitions):
            end = await consumer.end_offset(TopicPartition(topics.events, partition))
            if settled.get((topics.events, partition), 0) < end:
                return False
    finally:
        await consumer.close()
    return True


async def settle(runtime: ExchangeRuntime, timeout_s: float = 60.0) -> None:
    """Wait until the pipeline has settled everything sent so far (twice, for in-flight work)."""
    for _ in range(2):
        await eventually(lambda: quiescent(runtime), "the pipeline to settle", timeout_s)
        await asyncio.sleep(0.2)
