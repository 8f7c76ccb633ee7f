"""Runs a whole exchange (every stage and the API) inside the test's event loop."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from api.keys import Role, create_key
from api.marketdata import MarketData
from cx.node import serve
from cx.runtime import STAGES, ExchangeRuntime, Stage
from cx.settings import Settings
from exchange.log import TopicPartition
from exchange.pipeline import MatchingRunner, RiskRunner, StageRunner
from settlement.snapshots import SqlSnapshotStore

START_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def settings_for(
    data_dir: Path,
    kafka: str | None = None,
    database_url: str | None = None,
    prefix: str = "",
    **overrides: Any,
) -> Settings:
    """Settings of an exchange on its own port and topics; embedded when kafka/database unset.

    Request budgets are generous unless `overrides` set CX_API_RATE / CX_API_BURST: tests that
    are not about rate limits must not meet them.
    """
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "DATABASE_URL": database_url,
        "CX_DATA_DIR": data_dir,
        "CX_API_PORT": free_port(),
        "CX_TOPIC_PREFIX": prefix or f"t{uuid.uuid4().hex[:12]}",
        "CX_COMMAND_PARTITIONS": 3,
        "CX_MARKET_PARTITIONS": 3,
        "CX_API_RATE": 10_000,
        "CX_API_BURST": 10_000,
        **overrides,
    }
    return Settings(**values)


_ACCOUNT_PATH = re.compile(r"^/v1/accounts/([^/]+)")


class ActAsNamedAccount(httpx.Auth):
    """Sends the key of the account a request names (in its path, query or JSON body).

    The key is made on first use: a provider's if that first request deposits capacity or
    sells, else a buyer's. A request that names no account, or carries its own Authorization
    header, goes as it is.
    """

    requires_request_body = True

    def __init__(self, exchange: RunningExchange) -> None:
        self.exchange = exchange

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        body: dict[str, Any] = {}
        if request.headers.get("content-type") == "application/json" and request.content:
            loaded = json.loads(request.content)
            body = loaded if isinstance(loaded, dict) else {}
        match = _ACCOUNT_PATH.match(request.url.path)
        account = (
            match.group(1)
            if match
            else request.url.params.get("account_id") or body.get("account_id")
        )
        if account and "authorization" not in request.headers:
            provides = body.get("kind") == "capacity" or body.get("side") == "sell"
            key = await self.exchange.key_for(account, Role.PROVIDER if provides else Role.BUYER)
            request.headers["Authorization"] = f"Bearer {key}"
        yield request


@dataclass
class RunningExchange:
    """An exchange serving in the background, its runtime, and HTTP clients for its API.

    `anonymous` sends no key. `client` sends the key of the account each request names (see
    ActAsNamedAccount), so tests written before keys existed still act as that account.
    `as_(account)` is a client with that account's key. Keys are made directly in the key
    table.
    """

    runtime: ExchangeRuntime
    market: MarketData
    anonymous: httpx.AsyncClient
    base_url: str
    keys: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(
            base_url=self.base_url, timeout=30.0, auth=ActAsNamedAccount(self)
        )

    async def key_for(self, account: str, role: Role | str = Role.BUYER) -> str:
        """The API key of an account (the first call for an account sets its role)."""
        if account not in self.keys:
            created = await create_key(self.runtime.store.engine, account, Role(role), "test")
            self.keys[account] = created.key
        return self.keys[account]

    async def as_(self, account: str, role: Role | str = Role.BUYER) -> httpx.AsyncClient:
        """An HTTP client that sends the account's key."""
        if account not in self._clients:
            key = await self.key_for(account, role)
            self._clients[account] = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=30.0,
                headers={"Authorization": f"Bearer {key}"},
            )
        return self._clients[account]

    async def operator(self) -> httpx.AsyncClient:
        """A client with an operator's key."""
        return await self.as_("operator", Role.OPERATOR)

    async def close_clients(self) -> None:
        """Close the per-account clients."""
        await self.client.aclose()
        for client in self._clients.values():
            await client.aclose()


@asynccontextmanager
async def running_exchange(
    settings: Settings,
    clock_ms: Callable[[], int] | None = None,
    stages: tuple[Stage, ...] = STAGES,
) -> AsyncIterator[RunningExchange]:
    """Serve until the block ends, then stop cleanly and re-raise any stage's failure; with
    `clock_ms`, on that log clock; with `stages`, only those (without settlement, say, to see
    what the API answers while settlement is stopped)."""
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

    serving = asyncio.create_task(
        serve(settings, stages, extras=(capture,), stop=stop, clock_ms=clock_ms)
    )
    base_url = f"http://{settings.api_host}:{settings.api_port}"
    try:
        runtime, market = await asyncio.wait_for(asyncio.shield(captured), START_TIMEOUT_S)
        async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
            await eventually(lambda: _answers(client), what="the API to answer")
            await asyncio.wait_for(market.ready.wait(), START_TIMEOUT_S)
            # On Kafka the stages join their consumer groups first; commands sent before they
            # hold their partitions would wait out the API's 5 s answer time.
            for stage in runtime.running.values():
                caught_up = getattr(stage, "caught_up", None)
                if isinstance(caught_up, asyncio.Event):
                    await asyncio.wait_for(caught_up.wait(), START_TIMEOUT_S)
            running = RunningExchange(runtime, market, client, base_url)
            try:
                yield running
            finally:
                await running.close_clients()
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


InputEnds = dict[str, dict[int, int]]
"""The end offset of each partition of each topic a stage reads, by topic."""


async def quiescent(runtime: ExchangeRuntime) -> InputEnds | None:
    """The ends of the topics risk, matching, day-ahead and settlement (every shard) read, if
    each has consumed its topic to that end; None while any has not."""
    topics = runtime.topics
    stages = (
        ("risk", topics.commands, topics.command_partitions),
        ("matching", topics.orders, topics.market_partitions),
        ("dayahead", topics.dayahead, 1),
    )
    ends: InputEnds = {}
    for group, topic, partitions in stages:
        consumer = await runtime.log.consumer(group_id=topics.group(group))
        try:
            for partition in range(partitions):
                tp = TopicPartition(topic, partition)
                end = await consumer.end_offset(tp)
                if end and (await consumer.committed(tp) or 0) < end:
                    return None
                ends.setdefault(topic, {})[partition] = end
        finally:
            await consumer.close()
    # Each partition settles in one shard and its offsets are stored there.
    settled: dict[tuple[str, int], int] = {}
    for shard in runtime.shards:
        for key, offset in (await shard.consumer_offsets("settlement")).items():
            settled[key] = max(offset, settled.get(key, 0))
    consumer = await runtime.log.consumer()
    try:
        for partition in range(topics.market_partitions):
            end = await consumer.end_offset(TopicPartition(topics.events, partition))
            if settled.get((topics.events, partition), 0) < end:
                return None
            ends.setdefault(topics.events, {})[partition] = end
    finally:
        await consumer.close()
    return ends


async def settle(runtime: ExchangeRuntime, timeout_s: float = 60.0) -> InputEnds:
    """Wait until the pipeline has settled everything sent so far (twice, for in-flight work);
    return the input ends it saw consumed last, just before it returns.

    Settled means nothing more to do with what was sent, not that nothing more will be sent:
    the exchange's ticker sends every market partition a tick each CX_TICK_SECONDS, and a tick
    moves matching's clock, which its state hash covers. A test that reads live state hashes
    here to compare with a replay of the whole topics runs without ticks and passes these ends
    to `assert_stages_match_replay`, which fails naming any input that came after them.
    """
    for _ in range(2):
        await eventually(lambda: quiescent(runtime), "the pipeline to settle", timeout_s)
        await asyncio.sleep(0.2)
    # Once more, without a pause after it: the ends of the moment settle returns.
    ends: InputEnds = await eventually(
        lambda: quiescent(runtime), "the pipeline to settle", timeout_s
    )
    return ends


async def assert_stages_match_replay(
    runtime: ExchangeRuntime, partitions: int, settled_at: InputEnds | None = None
) -> dict[str, dict[int, str]]:
    """Replay risk and matching from scratch over their whole input topics (silently: they
    write nothing up to their groups' committed offsets) and check that each partition's state
    equals the last snapshot the stages stored, taken at its final offset on their clean stop.
    With `settled_at` (what `settle` returned when the test read the live hashes), check also
    that no input came after it: the live hashes are then of the state the replay ends in.

    Run it only once nothing else consumes the topics. Returns the replayed partition hashes.
    """
    snapshots = SqlSnapshotStore(runtime.store.engine)
    hashes: dict[str, dict[int, str]] = {}
    runners: list[StageRunner[Any]] = [
        # With the same seal as the live stage, so operators' signed commands replay as decided.
        RiskRunner(
            runtime.log, runtime.topics, runtime.catalogue, range(partitions), seal=runtime.seal
        ),
        MatchingRunner(runtime.log, runtime.topics, runtime.catalogue, range(partitions)),
    ]
    for runner in runners:
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await asyncio.wait_for(runner.caught_up.wait(), 120)
        stop.set()
        await task
        consumer = await runtime.log.consumer()
        try:
            for partition in range(partitions):
                end = await consumer.end_offset(TopicPartition(runner.input_topic, partition))
                if settled_at is not None:
                    at_settle = settled_at[runner.input_topic][partition]
                    assert end == at_settle, (
                        f"{runner.name} {partition}: {end - at_settle} input record(s) came after "
                        f"settle ({runner.input_topic} ended at {at_settle}, now at {end}): the "
                        "live state read at settle is not the state the replay ends in (the "
                        "ticker sends a tick every CX_TICK_SECONDS)"
                    )
                saved = await snapshots.latest(runner.name, runner.input_topic, partition)
                if end == 0:
                    continue
                assert saved is not None, f"{runner.name} {partition}: no snapshot"
                assert saved.input_offset == end, (runner.name, partition, saved.input_offset, end)
                assert saved.state_hash == runner.partition_hash(partition), (
                    f"{runner.name} {partition}: the replay's state hash differs from the "
                    "stage's final snapshot"
                )
        finally:
            await consumer.close()
        hashes[runner.name] = {p: runner.partition_hash(p) for p in range(partitions)}
    return hashes


class LogClock:
    """The log's clock: stands still until the test moves it."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms
