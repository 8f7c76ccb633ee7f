"""Runs chosen stages (and optionally the API, the demo market and the board) in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import uvicorn

from api.app import create_app
from api.marketdata import MarketData
from cx.collector import quiet_collector
from cx.runtime import ExchangeRuntime, Stage
from cx.settings import Settings
from cx.ticker import tick_markets

log = logging.getLogger(__name__)

Extra = Callable[[ExchangeRuntime, MarketData | None, asyncio.Event], Coroutine[Any, Any, None]]


async def serve(
    settings: Settings,
    stages: Sequence[Stage],
    *,
    extras: Sequence[Extra] = (),
    stop: asyncio.Event | None = None,
    clock_ms: Callable[[], int] | None = None,
    quiet_gc: bool = False,
    shard: int | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or `stop`), then stop every task and close cleanly; with
    `clock_ms`, on that clock instead of the wall's (see `ExchangeRuntime.open`); with
    `quiet_gc` (a process of its own, as `cx serve` and `cx run` are), tune the collector
    for the process (`quiet_collector`); with `shard`, settle only that settlement shard."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    runtime = await ExchangeRuntime.open(settings, clock_ms=clock_ms)
    if quiet_gc:
        quiet_collector()
    tasks: list[asyncio.Task[None]] = []
    try:
        for runner in runtime.runners(stages, shard):
            tasks.append(asyncio.create_task(runner.run(stop), name=runner.name))
        market: MarketData | None = None
        if "api" in stages:
            market = MarketData(runtime.log, runtime.topics, runtime.catalogue)
            tasks.append(asyncio.create_task(market.run(stop), name="market-data"))
            serving = _serve_api(runtime, market, stop, quiet_gc)
            tasks.append(asyncio.create_task(serving, name="api"))
            ticking = tick_markets(runtime, stop, settings.tick_seconds)
            tasks.append(asyncio.create_task(ticking, name="ticker"))
        for extra in extras:
            tasks.append(asyncio.create_task(extra(runtime, market, stop)))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in done:
            failure = None if task is stopper else task.exception()
            if failure is not None:
                raise failure
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("%s stopped with %r", task.get_name(), result)
        await runtime.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)


class _ApiServer(uvicorn.Server):
    """uvicorn without its signal handling: the process's handlers set `stop` instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_api(
    runtime: ExchangeRuntime, market: MarketData, stop: asyncio.Event, quiet_gc: bool
) -> None:
    app = create_app(runtime, market)
    if quiet_gc:
        quiet_collector()
    # Standing needs are kept by the API process that serves them (api/needs.py).
    keeping_needs = asyncio.create_task(app.state.needs.run(stop), name="needs")
    # Revocations made through another process close this one's private streams too.
    watching_keys = asyncio.create_task(app.state.key_watch.run(stop), name="key-watch")
    # Health judges progress between readings: read every second, not when someone asks.
    watching_pipeline = asyncio.create_task(
        app.state.status_monitor.watch(stop), name="pipeline-watch"
    )
    config = uvicorn.Config(
        app,
        host=runtime.settings.api_host,
        port=runtime.settings.api_port,
        log_level="warning",
        lifespan="off",
        # Stream messages are small JSON; compressing each one again for every subscriber
        # cost more CPU than the fan-out itself (docs/BENCHMARKS.md).
        ws_per_message_deflate=False,
    )
    server = _ApiServer(config)
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await serving
    await keeping_needs
    await watching_keys
    await watching_pipeline
