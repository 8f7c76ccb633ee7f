"""The day-ahead auction: exclusive groups, a day's auction and an account's results in it
(`api.dayahead` reads them from the stored auction events)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from api.auth import Caller, Reader, Trader, account_of
from api.dayahead import auction_document, results_document
from api.deps import CommandsDep, IdempotencyKey, IdempotentDep, LedgerDep, MarketDep
from api.idempotency import Answer, fingerprint, problem_body, respond
from api.marketdata import MarketData, order_key
from api.models import (
    DayAheadAuctionOut,
    DayAheadResultsOut,
    ExclusiveGroupAnswer,
    ExclusiveGroupRequest,
)
from api.problems import problems
from api.routes.orders import order_name
from exchange.domain.messages import (
    BlockAccepted,
    Identifier,
    OrderRejected,
    PlaceExclusiveGroup,
    RejectReason,
    exchange_order_id,
)

router = APIRouter(prefix="/v1", tags=["day-ahead auction"], responses=problems(429))

Date = Annotated[
    str,
    Path(
        max_length=16,
        examples=["2027-12-01", "2027-12-01T14:00"],
        description="A CST date (its day-ahead auction) or a CST time YYYY-MM-DDTHH:MM (the "
        "intraday auction then)",
    ),
]


def alternatives_of(
    account_id: str, name: str, alternatives: list[list[str]]
) -> list[dict[str, Any]]:
    """The order id and hours of each alternative of a group the account sent as `name`."""
    return [
        {"order_id": exchange_order_id(account_id, f"{name}.{n}"), "symbols": symbols}
        for n, symbols in enumerate(alternatives, start=1)
    ]


def log_now_ms(market: MarketData) -> int:
    """The latest log time the market data has seen (the wall clock before any)."""
    return market.now_ms or time.time_ns() // 1_000_000


@router.post(
    "/exclusive-groups",
    status_code=201,
    summary="Bid for one of several blocks in the day-ahead auction (an exclusive group)",
    description="Every alternative is a buy block of `quantity` in each of its hours at most "
    "`price` on average (or its own of `prices`); the auction accepts at most one, the one "
    "that adds most to the market's welfare. Each alternative holds its own cash (and voucher) "
    "until the auction; an alternative whose hours are not listed when the group is taken is "
    "dropped and named in `skipped`, holding nothing. "
    "Refusals: `too_many_alternatives` (more than 12), `invalid_block` (hours not consecutive, "
    "of two families or two CST days), `already_auctioned` (an alternative's gate passed), "
    "`no_day_ahead_auction`, `unknown_contract` (no alternative listed), "
    "`insufficient_funds`. A `client_order_id` or an `Idempotency-Key` header makes a retry "
    "return the first answer. GET /v1/orders/{id} reads the group by the answer's `order_id` "
    "(with its alternatives) and each alternative by its own.",
    response_model=ExclusiveGroupAnswer,
    responses=problems(401, 403, 422),
)
async def place_exclusive_group(
    group: ExclusiveGroupRequest,
    principal: Trader,
    commands: CommandsDep,
    idempotent: IdempotentDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    account = principal.account_id
    omitted = {name for name in ("voucher", "prices") if getattr(group, name) is None}
    body = group.model_dump(exclude=omitted or None)
    print_ = fingerprint("POST", "/v1/exclusive-groups", body)
    name, named = order_name("g", group.client_order_id, idempotency_key, print_)
    command = PlaceExclusiveGroup(
        order_id=name,
        account_id=account,
        alternatives=group.alternatives,
        price=group.price,
        quantity=group.quantity,
        voucher=group.voucher,
        prices=group.prices,
    )
    group_id = exchange_order_id(account, name)
    accepted = {
        "order_id": group_id,
        "status": "accepted",
        "alternatives": alternatives_of(account, name, group.alternatives),
    }

    async def send() -> Answer:
        outcome = await commands.submit_and_wait(command, order_key(account, group_id))
        if outcome is None:
            return Answer(201, {**accepted, "status": "pending"}, pending=True)
        if isinstance(outcome, OrderRejected):
            if named is not None and outcome.reason is RejectReason.DUPLICATE_ORDER_ID:
                return Answer(201, accepted, replayed=True)
            body = problem_body(422, outcome.reason.value, outcome.message, order_id=group_id)
            return Answer(422, body)
        if isinstance(outcome, BlockAccepted) and outcome.dropped:
            # Risk held the alternatives listed when it took the group and dropped the others:
            # the answer names those it holds, and those it dropped.
            sent = accepted["alternatives"]
            held = [a for n, a in enumerate(sent, start=1) if n not in outcome.dropped]
            skipped = [group.alternatives[n - 1] for n in outcome.dropped]
            return Answer(201, {**accepted, "alternatives": held, "skipped": skipped})
        return Answer(201, accepted)

    if named is None:
        return respond(await send(), replayed=False)
    return await idempotent.run(account, named, send)


@router.get(
    "/day-ahead/{date}",
    response_model=DayAheadAuctionOut,
    summary="A delivery day's day-ahead auction, or an intraday auction: status, gate and "
    "clearing prices",
    description="`collecting` until the gate (CST, the day before delivery; an intraday "
    "auction's gate is its time), `clearing` past it, `cleared` once the result is stored: "
    "then the clearing price and volume of every contract-hour, by region, hour and class, "
    "with the welfare the solver reached, the bound it proved and the gap between them. 404 "
    "`no_day_ahead_auction` on an exchange that runs none, `no_intraday_auction` for a time "
    "no intraday auction runs at.",
    responses=problems(401, 404, 422),
)
async def get_day_ahead(
    date: Date, _: Caller, market: MarketDep, ledger: LedgerDep
) -> dict[str, Any]:
    return await auction_document(
        ledger, market.catalogue, date, log_now_ms(market), market.day_ahead_collected
    )


@router.get(
    "/day-ahead/{date}/results",
    response_model=DayAheadResultsOut,
    summary="What the account's orders got in a day's day-ahead auction (or an intraday one)",
    description="Every order (and exclusive group alternative) of the account the auction "
    "collected: accepted, with its quantity and fills per hour at the clearing prices, or "
    "rejected with the reason; `pending` until the result. Operators name any `account_id`.",
    responses=problems(401, 403, 404, 422),
)
async def get_day_ahead_results(
    date: Date,
    principal: Reader,
    market: MarketDep,
    ledger: LedgerDep,
    account_id: Annotated[Identifier | None, Query()] = None,
) -> dict[str, Any]:
    account = account_of(principal, account_id)
    return await results_document(
        ledger, market.catalogue, date, account, log_now_ms(market), market.day_ahead_collected
    )
