"""Public market data: the catalogue with best prices, books, trades, candles, statistics and
the standard card-hour. A key is optional; anonymous callers have a budget per address."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from api.auth import Caller
from api.deps import LedgerDep, MarketDep, StallsDep, listed_or_404
from api.keys import Principal
from api.marketdata import MarketData
from api.models import (
    Book,
    CandleOut,
    CardOut,
    Contract,
    HistoryPoint,
    PerformanceOut,
    PublicTrade,
    Stats,
)
from api.problems import Problem, page_words, problems
from api.stalls import Stall, sellers
from exchange.domain.catalogue import REGIONS, ContractSpec, cst_iso, family_of, term_name
from exchange.domain.performance import decimal_text

MAX_DEPTH = 50
STATE_NAMES = page_words("state")
"""Each contract state in words, Chinese first, as the page says it."""

router = APIRouter(prefix="/v1", tags=["market data"], responses=problems(401, 429))


def net_of_voucher(
    market: MarketData, symbol: str, price: int | None, principal: Principal | None
) -> int | None:
    """One unit at `price` less what the caller's best voucher would pay of it now (the price
    itself for a caller without an eligible grant, or without a key)."""
    if price is None or principal is None:
        return price
    best = 0
    for (_, account), grant in market.accounts.grants.items():
        if account == principal.account_id and not grant.eligible(symbol, market.now_ms):
            best = max(best, grant.voucher_for(price))
    return price - best


def contract_view(
    market: MarketData, symbol: str, stalls_held: list[Stall], principal: Principal | None
) -> Contract:
    """A listed contract with its best prices, gross and net of the caller's voucher."""
    spec = market.spec(symbol)
    view = market.view(symbol)
    if spec is None or view is None:
        raise Problem(404, "unknown_contract", f"contract {symbol!r} is not listed")
    bid, ask = view.best_bid(), view.best_ask()
    best_bid = None if bid is None else bid[0]
    best_ask = None if ask is None else ask[0]
    factor = market.performance.factor(spec.resource_class.code)
    stats = market.stats(symbol)
    return Contract(
        symbol=symbol,
        resource_class=spec.resource_class.code,
        description=spec.resource_class.description,
        region=spec.region,
        region_name=REGIONS.get(spec.region, spec.region),
        delivery_start=spec.delivery_start.isoformat(),
        unit=spec.unit,
        tick_size=spec.tick_size,
        performance_factor=None if factor is None else decimal_text(factor),
        best_bid=best_bid,
        best_ask=best_ask,
        best_bid_per_std=market.per_std(symbol, best_bid),
        best_ask_per_std=market.per_std(symbol, best_ask),
        best_ask_net=(net := net_of_voucher(market, symbol, best_ask, principal)),
        best_ask_net_per_std=market.per_std(symbol, net),
        last=stats["last"],
        volume_24h=stats["volume"],
        seq=view.seq,
        sellers=sellers(stalls_held, spec),
        state=view.state,
        state_name=None if view.state is None else STATE_NAMES[view.state],
        band=market.band(symbol),
        **term_fields(market, spec),
    )


def term_fields(market: MarketData, spec: ContractSpec) -> dict[str, Any]:
    """A contract's term, the hours it covers and, for a strip, when it cascades (or did, which
    a delisting makes earlier than planned)."""
    catalogue = market.catalogue
    return {
        "term": spec.term,
        "term_name": term_name(spec.term),
        "hours": len(spec.hours()) if spec.is_term else 1,
        "delivery_end": spec.delivery_end.isoformat(),
        "cascades_at": cst_iso(market.cascaded_at.get(spec.symbol, catalogue.cascades_at(spec)))
        if spec.is_strip
        else None,
    }


@router.get(
    "/contracts",
    summary="The catalogue: every listed contract with its best prices",
    description="Gross and net-of-voucher best prices and prices per standard card-hour, "
    "so contracts of different cards compare like with like.",
)
async def list_contracts(principal: Caller, market: MarketDep, stalls: StallsDep) -> list[Contract]:
    stalls_held = await stalls.list_stalls()
    return [contract_view(market, spec.symbol, stalls_held, principal) for spec in market.listed()]


@router.get(
    "/contracts/{symbol}", summary="One contract with its best prices", responses=problems(404)
)
async def get_contract(
    symbol: str, principal: Caller, market: MarketDep, stalls: StallsDep
) -> Contract:
    listed_or_404(market, symbol)
    spec = market.spec(symbol)
    if spec is None:
        raise Problem(404, "unknown_contract", f"contract {symbol!r} is not listed")
    stalls_held = await stalls.list_stalls(spec.resource_class.code, spec.region)
    return contract_view(market, symbol, stalls_held, principal)


@router.get(
    "/contracts/{symbol}/book",
    summary="Depth of a contract's order book",
    responses=problems(404),
)
async def book(
    symbol: str,
    _: Caller,
    market: MarketDep,
    depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 10,
) -> Book:
    listed_or_404(market, symbol)
    view = market.views[symbol]
    return Book(symbol=symbol, seq=view.seq, **view.depth(depth))


@router.get(
    "/contracts/{symbol}/trades",
    summary="Settled trades of a contract, newest first",
    responses=problems(404),
)
async def contract_trades(
    symbol: str,
    _: Caller,
    market: MarketDep,
    ledger: LedgerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[PublicTrade]:
    listed_or_404(market, symbol)
    rows = await ledger.contract_trades(symbol, limit)
    return [
        PublicTrade(
            trade_id=r["trade_id"],
            symbol=r["symbol"],
            price=r["price"],
            price_per_std=market.per_std(symbol, r["price"]),
            quantity=r["quantity"],
            aggressor=r["aggressor"],
            ts=r["ts"],
        )
        for r in rows
    ]


@router.get(
    "/contracts/{symbol}/candles",
    summary="1-minute or 1-hour candles of a contract, oldest first (log time)",
    responses=problems(404),
)
async def candles(
    symbol: str,
    _: Caller,
    market: MarketDep,
    interval: Annotated[Literal["1m", "1h"], Query()] = "1m",
    limit: Annotated[int, Query(ge=1, le=1500)] = 60,
) -> list[CandleOut]:
    listed_or_404(market, symbol)
    return [CandleOut(**c) for c in market.candles(symbol, interval, limit)]


@router.get(
    "/families/{family}/history",
    summary="A product's price history: every delivery hour of a family, by hour or day",
    description="The 1-hour candles of every contract of the family (`CLASS.REGION`, e.g. "
    "`H100-80G.GZ`) merged by hour (`interval=1h`) or by China Standard Time day (`1d`), "
    "oldest first, with the volume-weighted average price; candles are kept 35 days.",
    responses=problems(404),
)
async def family_history(
    family: str,
    _: Caller,
    market: MarketDep,
    interval: Annotated[Literal["1h", "1d"], Query()] = "1d",
    limit: Annotated[int, Query(ge=1, le=840)] = 35,
) -> list[HistoryPoint]:
    if not any(family_of(symbol) == family for symbol in market.views):
        raise Problem(404, "unknown_contract", f"no contract of the family {family!r} is listed")
    return [
        HistoryPoint.model_validate(point)
        for point in market.family_history(family, interval == "1d", limit)
    ]


@router.get(
    "/contracts/{symbol}/stats",
    summary="24-hour statistics of a contract (log time)",
    responses=problems(404),
)
async def stats(symbol: str, _: Caller, market: MarketDep) -> Stats:
    listed_or_404(market, symbol)
    return Stats(symbol=symbol, **market.stats(symbol))


@router.get(
    "/performance",
    summary="The standard card-hour: each card's published throughput and factor",
)
async def performance(_: Caller, market: MarketDep) -> PerformanceOut:
    table = market.performance
    return PerformanceOut(
        base=table.base,
        metric=table.metric,
        about=table.about,
        cards=[
            CardOut(
                code=c.code,
                name=c.name,
                dense_tflops=decimal_text(c.dense_tflops, 2),
                factor=decimal_text(c.factor),
                source=c.source,
                url=c.url,
                confidence=c.confidence,
            )
            for c in table.cards.values()
        ],
    )
