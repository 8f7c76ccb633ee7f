"""A whole exchange serving on its own event loop in a background thread, for synchronous tests.

Hypothesis's stateful tests are synchronous. `LiveExchange` runs `running_exchange` (every
stage and the API) on a private event loop in a thread; the test drives it over HTTP with a
synchronous client as any participant would, and runs the few checks that read the exchange's
internals (its event store, the settlement projection) as coroutines on that loop with `run`.
A failure inside the exchange's thread (a stage that stopped, an error on clean shutdown, a
check run after the stop) is re-raised by `stop`, and by `run` as soon as the thread has died.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from cx.settings import Settings
from tests.e2e.harness import RunningExchange, running_exchange

T = TypeVar("T")

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 120.0


class ExchangeDied(AssertionError):
    """The exchange's thread ended while the test still needed it."""


class LiveExchange:
    """An exchange serving in a background thread until `stop`."""

    def __init__(
        self,
        settings: Settings,
        clock_ms: Callable[[], int],
        prepare: Prepare | None = None,
        after: Callable[[Settings, Callable[[], int]], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.clock_ms = clock_ms
        self.prepare = prepare or _as_they_are
        self.after = after
        self.check_after_stop = True
        """Run `after` once the exchange stopped (the test turns it off when a step failed)."""
        self.loop = asyncio.new_event_loop()
        self.failure: BaseException | None = None
        self._exchange: RunningExchange | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="live-exchange", daemon=True)

    @property
    def exchange(self) -> RunningExchange:
        """The running exchange (its runtime, market data and base URL)."""
        if self._exchange is None:
            raise ExchangeDied("the exchange is not running") from self.failure
        return self._exchange

    @property
    def base_url(self) -> str:
        """Where its API listens."""
        return self.exchange.base_url

    def start(self) -> LiveExchange:
        """Start serving; returns once the API answers and every stage caught up."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise ExchangeDied(f"the exchange did not start within {START_TIMEOUT_S}s")
        if self._exchange is None:
            raise ExchangeDied("the exchange failed to start") from self.failure
        return self

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 120.0) -> T:
        """Run a coroutine on the exchange's loop and return its result."""
        if not self._thread.is_alive():
            coroutine.close()
            raise ExchangeDied("the exchange's thread has stopped") from self.failure
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout_s)

    def stop(self) -> None:
        """Stop cleanly and re-raise whatever failed inside the exchange's thread."""
        if self._thread.is_alive() and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            raise ExchangeDied(f"the exchange did not stop within {STOP_TIMEOUT_S}s")
        self._exchange = None
        if self.failure is not None:
            raise ExchangeDied("the exchange's thread failed") from self.failure

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as error:
            self.failure = error
        finally:
            self._ready.set()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.prepare(self.settings) as settings:
            self.settings = settings
            async with running_exchange(settings, self.clock_ms) as exchange:
                self._exchange = exchange
                self._ready.set()
                await self._stop.wait()
            if self.after is not None and self.check_after_stop:
                await self.after(settings, self.clock_ms)


Prepare = Callable[[Settings], AbstractAsyncContextManager[Settings]]
"""Makes what an exchange needs for its life (a fresh database, say): the settings to use."""


@asynccontextmanager
async def _as_they_are(settings: Settings) -> AsyncIterator[Settings]:
    yield settings
