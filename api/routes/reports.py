"""Trade reports for operators and programme administrators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import Auditor
from api.deps import LedgerDep, MarketDep
from api.models import ReportTrade
from api.parameters import MAX_SQL_INT
from api.problems import problems
from exchange.domain.messages import Identifier

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=problems(401, 403, 429))


@router.get("/trades", summary="Settled trades with counterparties, newest first")
async def trade_report(
    _: Auditor,
    market: MarketDep,
    ledger: LedgerDep,
    account_id: Annotated[Identifier | None, Query()] = None,
    symbol: Annotated[str | None, Query(max_length=64)] = None,
    since_ts: Annotated[
        int | None, Query(ge=0, le=MAX_SQL_INT, description="log time, ms, inclusive")
    ] = None,
    until_ts: Annotated[
        int | None, Query(ge=0, le=MAX_SQL_INT, description="log time, ms, exclusive")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[ReportTrade]:
    rows = await ledger.trades_report(
        account_id=account_id,
        symbol=symbol,
        since_ts=since_ts,
        until_ts=until_ts,
        limit=limit,
    )
    return [
        ReportTrade(
            **{k: v for k, v in r.items() if k != "position"},
            price_per_std=market.per_std(r["symbol"], r["price"]),
        )
        for r in rows
    ]
