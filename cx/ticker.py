"""The market clock's heartbeat: a `tick` to every market partition at a steady interval.

Matching's time is the log's: expiries, gate closures, listings, auctions and deliveries fall
due at the first record a partition reads at or after their time. A quiet partition would leave
them waiting, so the node that serves the API sends each orders partition a `ControlMarket`
`tick` every CX_TICK_SECONDS, naming a contract listed on that partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cx.runtime import ExchangeRuntime
from exchange.domain.messages import ControlMarket
from exchange.log import LogError

log = logging.getLogger(__name__)

TICKER_ID = "clock"
"""The operator id the ticks are sent under."""


def tick_symbols(runtime: ExchangeRuntime, at_ms: int) -> list[str]:
    """One contract listed at `at_ms` per market partition that lists any, by partition."""
    chosen: dict[int, str] = {}
    for spec in runtime.catalogue.listed_at(at_ms):
        chosen.setdefault(runtime.topics.market_partition(spec.symbol), spec.symbol)
    return [chosen[partition] for partition in sorted(chosen)]


async def tick_markets(runtime: ExchangeRuntime, stop: asyncio.Event, every_s: float) -> None:
    """Send the ticks until `stop` is set; a log that is down only delays them."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        # The log's clock, not the wall's: the contracts listed at the time matching will see.
        for symbol in tick_symbols(runtime, runtime.clock_ms()):
            try:
                await runtime.submit(
                    ControlMarket(operator_id=TICKER_ID, action="tick", symbol=symbol)
                )
            except LogError as error:
                log.warning("market tick to %s not sent: %s", symbol, error)
