"""The terminal board of `cx demo`: live best bid/ask and trades per contract."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from rich.console import Console
from rich.live import Live
from rich.table import Table

from api.marketdata import MarketData
from cx.runtime import ExchangeRuntime
from exchange.domain.catalogue import ContractSpec
from settlement.statements import unit_of, yuan

REFRESH_S = 0.5
PLAIN_EVERY_S = 5.0
PLAIN_WIDTH = 120


TERMS_ZH = {"D": "日 day", "W": "周 week", "N": "夜 nights", "M": "月 month"}
"""A term contract's period on the board."""


def _unit(spec: ContractSpec) -> str:
    """The unit a price is per, and for a term contract the hours one unit covers."""
    unit = unit_of(spec.symbol)
    if not spec.is_term:
        return unit
    return f"{unit} x{len(spec.hours())} {TERMS_ZH[spec.term]}"


def _money(fen: int | None) -> str:
    """A price in 元 ("-" for none)."""
    return "-" if fen is None else yuan(fen)


def render(runtime: ExchangeRuntime, market: MarketData) -> Table:
    """One table row per contract: bid, ask, last trade, trade count and volume seen."""
    settings = runtime.settings
    table = Table(
        title=f"算力交易所 Compute exchange · http://{settings.api_host}:{settings.api_port}/ "
        "(Ctrl-C 停止 stops)",
        caption="合约 contract · 单位 unit · 买量/买价 bid qty/bid · 卖价/卖量 ask/ask qty · "
        "最新价 last · 笔数/成交量 trades/volume (自开市起 since the open); "
        "价格 元/单位 prices in CNY per unit (周、夜、月合约: 每卡时 a week, nights or month: per "
        "card-hour, xN hours)",
    )
    for column in ("合约", "单位", "买量", "买价", "卖价", "卖量", "最新价", "笔数", "成交量"):
        left = column in ("合约", "单位")
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for spec in market.listed():
        view = market.view(spec.symbol)
        if view is None:
            raise RuntimeError(f"{spec.symbol} is listed but the market data has no view of it")
        bid, ask = view.best_bid(), view.best_ask()
        last = view.trades[-1].price if view.trades else None
        count = market.trade_counts.get(spec.symbol, 0)
        volume = market.trade_volumes.get(spec.symbol, 0)
        table.add_row(
            spec.symbol,
            _unit(spec),
            "-" if bid is None else str(bid[1]),
            _money(None if bid is None else bid[0]),
            _money(None if ask is None else ask[0]),
            "-" if ask is None else str(ask[1]),
            _money(last),
            str(count),
            str(volume),
        )
    return table


async def show_board(
    runtime: ExchangeRuntime, market: MarketData | None, stop: asyncio.Event
) -> None:
    """Redraw the board until `stop`; on a non-terminal, print it every few seconds."""
    if market is None:
        raise RuntimeError("the board needs the API's market data: run it with the api stage")
    await market.ready.wait()
    if not sys.stdout.isatty():
        # Logs and pipes get the full table, not one cut to a default 80 columns.
        console = Console(width=PLAIN_WIDTH)
        while not stop.is_set():
            console.print(render(runtime, market))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PLAIN_EVERY_S)
        return
    console = Console()
    with Live(render(runtime, market), console=console, refresh_per_second=4) as live:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_S)
            live.update(render(runtime, market))
