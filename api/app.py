"""The HTTP and WebSocket API (FastAPI), versioned under /v1, and the supermarket page at /.

Commands are validated here for a fast, specific answer, appended to the commands topic, and
the API waits briefly for the exchange's decision so a client learns whether its order was
accepted. The risk stage validates everything again: any Kafka client may send commands.
Errors are RFC 9457 problem details (application/problem+json). docs/API.md describes keys,
roles, idempotency, rate limits and the streams.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from api import queries
from api.auth import (
    Auditor,
    Caller,
    Gate,
    Operator,
    Reader,
    Trader,
    account_of,
    document_optional_keys,
)
from api.bank import bank_router
from api.idempotency import (
    Answer,
    Idempotent,
    Named,
    derived_id,
    fingerprint,
    key_name,
    problem_body,
    respond,
)
from api.keys import (
    KeyInfo,
    KeyRing,
    Principal,
    Role,
    RoleConflict,
    create_key,
    list_keys,
    revoke_key,
)
from api.marketdata import (
    INTERVALS,
    MarketData,
    Outcome,
    cancel_all_key,
    control_key,
    deposit_key,
    limits_key,
    order_key,
)
from api.models import (
    AccountOut,
    AmendAnswer,
    AmendRequest,
    BlockAnswer,
    BlockRequest,
    Book,
    CancelAllAnswer,
    CancelAnswer,
    CandleOut,
    CapacityDeposit,
    CardOut,
    CashDeposit,
    Contract,
    ControlAnswer,
    ControlRequest,
    DepositAnswer,
    DepositRequest,
    Fill,
    Health,
    HealthProblem,
    KeyOut,
    KeyRequest,
    LimitsAnswer,
    LimitsRequest,
    MarketControlRequest,
    Me,
    NewKeyOut,
    Obligation,
    OrderAnswer,
    OrderRequest,
    OrderRow,
    PerformanceOut,
    PipelineStatusOut,
    PublicTrade,
    ReportTrade,
    SetAsideAnswer,
    SetAsideRequest,
    StageProgress,
    StalledStage,
    Stats,
    StoredEventOut,
)
from api.needs import NeedService, needs_router
from api.parameters import refuse_unknown_parameters
from api.ports import Runtime
from api.problems import (
    PROBLEM,
    BodyLimit,
    Problem,
    RefuseDuplicateKeys,
    RefuseNul,
    amend_openapi,
    document_problems,
    install_handlers,
    problems,
)
from api.ratelimit import RateLimiter
from api.stalls import Stall, list_stalls, sellers, stall_router
from api.streams import (
    KEY_REVOKED,
    KeyWatch,
    parse_list,
    sse_events,
    sse_subscriber,
    websocket_stream,
)
from exchange.domain.catalogue import REGIONS, SymbolError, parse_family, parse_symbol
from exchange.domain.messages import (
    ALL_CONTRACTS,
    AccountLimitsSet,
    AmendOrder,
    AmendRejected,
    CancelAllOrders,
    CancelAllRequested,
    CancelOrder,
    CancelRejected,
    CapacityDeposited,
    Command,
    ControlMarket,
    DepositCapacity,
    DepositFunds,
    DepositRejected,
    FundsDeposited,
    Identifier,
    MarketAction,
    MarketControlRejected,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderRejected,
    PlaceBlockOrder,
    PlaceOrder,
    RejectReason,
    SetAccountLimits,
    exchange_order_id,
)
from exchange.domain.performance import decimal_text
from settlement.audit import audit
from settlement.history import EXPORT_COLUMNS, export_line, history_query, replay_document
from settlement.pipeline_status import (
    LogOffsets,
    PartitionProgress,
    StalledPartition,
    StatusMonitor,
)
from settlement.replay import parse_until, replay
from settlement.stalled import set_aside as mark_set_aside
from settlement.store import StoredEvent

OUTCOME_TIMEOUT_S = 5.0
SETTLE_WAIT_S = 5.0
MAX_DEPTH = 50
MAX_SQL_INT = 2**63 - 1
"""The largest position, version or time a query may name: a BIGINT (larger ones crashed)."""

TAGS = [
    {"name": "market data", "description": "Public: no key needed."},
    {"name": "orders", "description": "A participant's own orders (provider and buyer keys)."},
    {"name": "accounts", "description": "Balances, deposits, fills and delivery obligations."},
    {"name": "streams", "description": "WebSocket and Server-Sent Events; see docs/API.md."},
    {
        "name": "needs",
        "description": "State a need; the exchange places the cheapest fitting block (buyer keys).",
    },
    {"name": "operator", "description": "Keys and the event history (operator keys)."},
    {"name": "reports", "description": "Trade reports (operator and programme_admin keys)."},
    {"name": "stalls", "description": "What providers offer, in the standard specification."},
]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Makes a POST idempotent: a retry with the same key returns the first answer.",
    ),
]


def create_app(runtime: Runtime, market: MarketData) -> FastAPI:
    """The API of one running exchange."""
    settings = runtime.settings
    app = FastAPI(
        title="Compute exchange",
        version="1",
        description=(
            "Standardized compute contracts (card-hours, core-hours) traded on a continuous "
            "limit order book. Prices and money are integer fen (0.01 CNY); quantities are "
            "integer units. Authenticate with `Authorization: Bearer cx_...` (an API key); "
            "public market data needs none. Errors are RFC 9457 problem details."
        ),
        openapi_tags=TAGS,
        dependencies=[Depends(refuse_unknown_parameters)],
    )
    install_handlers(app)
    amend_openapi(app, document_problems, document_optional_keys)
    app.add_middleware(RefuseDuplicateKeys)
    app.add_middleware(RefuseNul)
    app.add_middleware(BodyLimit)  # outermost: RefuseNul reads at most MAX_BODY_BYTES
    engine = runtime.store.engine
    catalogue = runtime.catalogue
    keyring = KeyRing(engine, settings.key_cache_seconds, settings.key_outage_seconds)
    gate = Gate(
        keyring,
        RateLimiter(settings.api_rate, settings.api_burst),
        RateLimiter(settings.api_rate * 5, settings.api_burst * 5),
        RateLimiter(settings.api_rate, settings.api_burst),
    )
    app.state.gate = gate
    app.state.key_watch = KeyWatch(keyring, market)
    app.state.market = market
    monitor = StatusMonitor(
        LogOffsets(runtime.log),
        runtime.topics,
        runtime.store,
        settings.stall_seconds,
        folded=lambda: market.positions,
    )
    idempotent = Idempotent(engine)

    async def submit_and_wait(command: Command, key: str) -> Outcome | None:
        future = market.expect(key)
        try:
            await runtime.submit(command)
            return await asyncio.wait_for(asyncio.shield(future), OUTCOME_TIMEOUT_S)
        except TimeoutError:
            return None
        finally:
            market.forget(key, future)

    def contract_or_404(symbol: str) -> None:
        if market.view(symbol) is None:
            raise Problem(404, "unknown-contract", catalogue.why_not_listed(symbol, market.now_ms))

    # A key is optional here, but one that is sent must be live (401), and anonymous callers
    # have a budget per address (429).
    public = APIRouter(prefix="/v1", tags=["market data"], responses=problems(401, 429))
    reported: dict[str, Any] = {}
    """The latest status reading health converted, and its stages and stalls JSON-ready."""

    @public.get(
        "/health",
        response_model=Health,
        summary="Whether the API is up and caught up, and every stage's progress",
        description="Per stage (risk, matching, settlement, this API process's market-data "
        "fold) and partition: the end offset, the stage's offset, the lag and whether it "
        "moves. 503 (a problem detail listing the same) when a stage is stalled: settlement "
        "stopped at an event it cannot apply, or a lag has not moved for CX_STALL_SECONDS.",
        responses={
            503: {
                "description": "A stage is stalled (`stalled`)",
                "content": {PROBLEM: {"schema": _inline_schema(HealthProblem)}},
            }
        },
    )
    async def health(_: Caller) -> JSONResponse:
        pipeline = await monitor.status()
        if reported.get("of") is not pipeline:
            # Converted once per reading: load balancers ask far more often than it changes.
            reported.update(
                of=pipeline,
                stages=[_stage_out(p).model_dump() for p in pipeline.partitions],
                stalls=[_stall_out(s).model_dump() for s in pipeline.stalls],
            )
        ready = market.ready.is_set()
        body = {
            "market_data_ready": ready,
            "log_time": market.now_ms,
            "stall_seconds": pipeline.stall_seconds,
            "stages": reported["stages"],
            "stalls": reported["stalls"],
        }
        if not pipeline.stalled:
            return JSONResponse({"status": "ok" if ready else "starting", **body})
        problem = {"type": "/problems/stalled", "title": "stalled", "status": 503}
        body = {**problem, "detail": pipeline.describe(), **body}
        return JSONResponse(body, 503, media_type=PROBLEM)

    def net_of_voucher(symbol: str, price: int | None, principal: Principal | None) -> int | None:
        """One unit at `price` less what the caller's best voucher would pay of it now (the
        price itself for a caller without an eligible grant, or without a key)."""
        if price is None or principal is None:
            return price
        best = 0
        for (_, account), grant in market.accounts.grants.items():
            if account == principal.account_id and not grant.eligible(symbol, market.now_ms):
                best = max(best, grant.voucher_for(price))
        return price - best

    def contract_view(
        symbol: str, stalls_held: list[Stall], principal: Principal | None = None
    ) -> Contract:
        spec = catalogue.get(symbol)
        view = market.view(symbol)
        assert spec is not None
        assert view is not None
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
            best_ask_net=(net := net_of_voucher(symbol, best_ask, principal)),
            best_ask_net_per_std=market.per_std(symbol, net),
            last=stats["last"],
            volume_24h=stats["volume"],
            seq=view.seq,
            sellers=sellers(stalls_held, spec),
        )

    @public.get(
        "/contracts",
        summary="The catalogue: every listed contract with its best prices",
        description="Gross and net-of-voucher best prices and prices per standard card-hour, "
        "so contracts of different cards compare like with like.",
    )
    async def list_contracts(principal: Caller) -> list[Contract]:
        stalls_held = await list_stalls(engine)
        return [contract_view(spec.symbol, stalls_held, principal) for spec in market.listed()]

    @public.get(
        "/contracts/{symbol}", summary="One contract with its best prices", responses=problems(404)
    )
    async def get_contract(symbol: str, principal: Caller) -> Contract:
        contract_or_404(symbol)
        spec = market.spec(symbol)
        assert spec is not None
        stalls_held = await list_stalls(engine, spec.resource_class.code, spec.region)
        return contract_view(symbol, stalls_held, principal)

    @public.get(
        "/contracts/{symbol}/book",
        summary="Depth of a contract's order book",
        responses=problems(404),
    )
    async def book(
        symbol: str, _: Caller, depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 10
    ) -> Book:
        contract_or_404(symbol)
        view = market.views[symbol]
        return Book(symbol=symbol, seq=view.seq, **view.depth(depth))

    @public.get(
        "/contracts/{symbol}/trades",
        summary="Settled trades of a contract, newest first",
        responses=problems(404),
    )
    async def contract_trades(
        symbol: str, _: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> list[PublicTrade]:
        contract_or_404(symbol)
        rows = await queries.contract_trades(engine, symbol, limit)
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

    @public.get(
        "/contracts/{symbol}/candles",
        summary="1-minute or 1-hour candles of a contract, oldest first (log time)",
        responses=problems(404),
    )
    async def candles(
        symbol: str,
        _: Caller,
        interval: Annotated[Literal["1m", "1h"], Query()] = "1m",
        limit: Annotated[int, Query(ge=1, le=1500)] = 60,
    ) -> list[CandleOut]:
        contract_or_404(symbol)
        assert interval in INTERVALS
        return [CandleOut(**c) for c in market.candles(symbol, interval, limit)]

    @public.get(
        "/contracts/{symbol}/stats",
        summary="24-hour statistics of a contract (log time)",
        responses=problems(404),
    )
    async def stats(symbol: str, _: Caller) -> Stats:
        contract_or_404(symbol)
        return Stats(symbol=symbol, **market.stats(symbol))

    @public.get(
        "/performance",
        summary="The standard card-hour: each card's published throughput and factor",
    )
    async def performance(_: Caller) -> PerformanceOut:
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

    private = APIRouter(prefix="/v1", responses=problems(401, 403, 429))

    @private.get("/me", tags=["accounts"], summary="The account and role of the presented key")
    async def me(principal: Reader) -> Me:
        return Me(key_id=principal.key_id, account_id=principal.account_id, role=principal.role)

    async def place(command: PlaceOrder, named: bool) -> Answer:
        order_id = exchange_order_id(command.account_id, command.order_id)
        client_order_id = command.client_order_id
        if named:
            settled = await queries.order(engine, order_id)
            if settled is not None:
                return _answer_from_row(settled)
        outcome = await submit_and_wait(command, order_key(command.account_id, order_id))
        if outcome is None:
            return _pending(order_id, client_order_id)
        if isinstance(outcome, OrderRejected):
            if named and outcome.reason is RejectReason.DUPLICATE_ORDER_ID:
                # The account's own name, reserved for this request: an earlier send of it
                # was accepted before this process could answer it.
                settled = await _eventually_settled(engine, order_id)
                return (
                    _pending(order_id, client_order_id)
                    if settled is None
                    else _answer_from_row(settled)
                )
            return Answer(
                422, problem_body(422, outcome.reason.value, outcome.message, order_id=order_id)
            )
        assert isinstance(outcome, OrderAccepted | OrderCancelled)
        return Answer(201, _accepted(order_id, client_order_id))

    @private.post(
        "/orders",
        status_code=201,
        response_model=OrderAnswer,
        tags=["orders"],
        summary="Place an order",
        description="Answers once the risk stage has decided: 201 accepted, or the rejection "
        "as a problem (`insufficient_funds`, `insufficient_capacity`, ...); 202 pending if "
        "that takes more than 5 s. A `client_order_id` or an `Idempotency-Key` header makes "
        "a retry return the first answer (header `Idempotent-Replayed: true`); the same name "
        "with a different order is refused (`idempotency-key-reused`), even while the first "
        "is pending.",
        responses={
            202: {"model": OrderAnswer, "description": "Not decided within 5 s; retry to learn"},
            **problems(404, 422),
        },
    )
    async def place_order(
        request: OrderRequest,  # type: ignore[valid-type]
        principal: Trader,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        body: dict[str, Any] = request.model_dump()  # type: ignore[attr-defined]
        account = account_of(principal, body.pop("account_id"))
        symbol = body["symbol"]
        spec = market.spec(symbol)
        if spec is None:
            raise Problem(404, "unknown-contract", f"contract {symbol!r} is not listed")
        price = body.get("price")
        if isinstance(price, int) and price % spec.tick_size:
            raise Problem(
                422,
                RejectReason.PRICE_NOT_ON_TICK.value,
                f"price {price} is not a multiple of the tick size "
                f"{spec.tick_size} fen of {spec.symbol}",
            )
        client_order_id = body.get("client_order_id")
        print_ = fingerprint("POST", "/v1/orders", body)
        name, named = _order_name("o", client_order_id, idempotency_key, print_)
        command = PlaceOrder(order_id=name, account_id=account, **body)
        if named is None:
            return respond(await place(command, named=False), replayed=False)
        return await idempotent.run(account, named, lambda: place(command, named=True))

    @private.get("/orders", tags=["orders"], summary="The account's settled orders, newest first")
    async def list_orders(
        principal: Reader,
        account_id: Annotated[Identifier | None, Query()] = None,
        status: Annotated[
            Literal["open", "filled", "cancelled", "rejected"] | None, Query()
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[OrderRow]:
        account = account_of(principal, account_id)
        return [OrderRow(**r) for r in await queries.account_orders(engine, account, status, limit)]

    async def own_order(principal: Principal, order_id: str) -> dict[str, Any]:
        row = await queries.order(engine, order_id)
        if row is None or (
            principal.role is not Role.OPERATOR and row["account_id"] != principal.account_id
        ):
            raise Problem(
                404, "unknown_order", f"account {principal.account_id} has no order {order_id!r}"
            )
        return row

    @private.get(
        "/orders/{order_id}",
        tags=["orders"],
        summary="One settled order of the account",
        responses=problems(404),
    )
    async def get_order(order_id: Identifier, principal: Reader) -> OrderRow:
        return OrderRow(**await own_order(principal, order_id))

    async def cancel(account: str, order_id: str) -> OrderCancelled | None:
        outcome = await submit_and_wait(
            CancelOrder(order_id=order_id, account_id=account), order_key(account, order_id)
        )
        if outcome is None:
            return None
        if isinstance(outcome, CancelRejected):
            raise _not_changed(outcome)
        if isinstance(outcome, OrderCancelled):
            return outcome
        raise Problem(409, "unexpected-outcome", f"order {order_id!r}: {outcome.type}")

    @private.delete(
        "/orders/{order_id}",
        tags=["orders"],
        summary="Cancel what remains of an open order",
        responses=problems(404, 409),
    )
    async def cancel_order(
        order_id: Identifier,
        principal: Trader,
        account_id: Annotated[Identifier | None, Query()] = None,
    ) -> CancelAnswer:
        account = account_of(principal, account_id)
        cancelled = await cancel(account, order_id)
        if cancelled is None:
            return CancelAnswer(order_id=order_id, status="pending")
        return CancelAnswer(order_id=order_id, status="cancelled", remaining=cancelled.remaining)

    @private.patch(
        "/orders/{order_id}",
        tags=["orders"],
        summary="Amend an open order's price or open quantity, in place",
        description="A smaller quantity at the same price keeps the order's time priority; a "
        "new price or a larger quantity loses it. Raising a buy's price or an order's quantity "
        "holds the extra first; a refused amend leaves the order as it was.",
        responses=problems(404, 409, 422),
    )
    async def amend_order(
        order_id: Identifier, amendment: AmendRequest, principal: Trader
    ) -> AmendAnswer:
        account = principal.account_id
        live = market.orders.get(order_id)
        if live is not None and live.account_id != account:
            raise Problem(404, "unknown_order", f"account {account} has no open order {order_id!r}")
        # An order not open here may have closed, or not reached this process yet: the risk
        # stage tells a closed order of the account (409) from an unknown one (404).
        spec = None if live is None else catalogue.get(live.symbol)
        if amendment.price is not None and spec is not None and amendment.price % spec.tick_size:
            raise Problem(
                422,
                RejectReason.PRICE_NOT_ON_TICK.value,
                f"price {amendment.price} is not a multiple of the tick size {spec.tick_size} fen",
            )
        command = AmendOrder(
            order_id=order_id,
            account_id=account,
            price=amendment.price,
            quantity=amendment.quantity,
        )
        outcome = await submit_and_wait(command, order_key(account, order_id))
        if outcome is None:
            return AmendAnswer(order_id=order_id, status="pending")
        if isinstance(outcome, AmendRejected):
            if outcome.reason in _NOT_THE_ACCOUNTS_OPEN_ORDER:
                raise _not_changed(outcome)
            raise Problem(422, outcome.reason.value, outcome.message, order_id=order_id)
        if isinstance(outcome, OrderAmended):
            return AmendAnswer(
                order_id=order_id,
                status="amended",
                price=outcome.price,
                remaining=outcome.remaining,
                kept_priority=outcome.kept_priority,
            )
        raise Problem(409, "order_not_open", f"order {order_id!r} is no longer open")

    @private.delete(
        "/orders",
        tags=["orders"],
        summary="Cancel every open order of the account (the kill switch)",
    )
    async def cancel_all_orders(principal: Trader) -> CancelAllAnswer:
        account = principal.account_id
        outcome = await submit_and_wait(
            CancelAllOrders(account_id=account), cancel_all_key(account)
        )
        if isinstance(outcome, CancelRejected):
            # Nothing open: nothing to cancel, at once.
            return CancelAllAnswer(account_id=account, status="requested", symbols=[])
        if not isinstance(outcome, CancelAllRequested):
            return CancelAllAnswer(account_id=account, status="pending")
        return CancelAllAnswer(account_id=account, status="requested", symbols=outcome.symbols)

    @private.post(
        "/block-orders",
        status_code=201,
        tags=["orders"],
        summary="Place a block order: every listed hour or none, limited by an average price",
        description="A `client_order_id` (one name with the account's orders) or an "
        "`Idempotency-Key` header makes a retry return the first answer; the same name with a "
        "different block is refused (`idempotency-key-reused`).",
        response_model=BlockAnswer,
        responses=problems(404, 422),
    )
    async def place_block(
        block: BlockRequest, principal: Trader, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        for symbol in block.symbols:
            contract_or_404(symbol)
        account = principal.account_id
        print_ = fingerprint("POST", "/v1/block-orders", block.model_dump())
        name, named = _order_name("b", block.client_order_id, idempotency_key, print_)
        command = PlaceBlockOrder(
            order_id=name,
            account_id=account,
            symbols=block.symbols,
            side=block.side,
            price=block.price,
            quantity=block.quantity,
        )
        order_id = exchange_order_id(account, name)

        async def send() -> Answer:
            outcome = await submit_and_wait(command, order_key(account, order_id))
            accepted = {"order_id": order_id, "status": "accepted", "symbols": block.symbols}
            if outcome is None:
                return Answer(201, {**accepted, "status": "pending"}, pending=True)
            if isinstance(outcome, OrderRejected):
                if named is not None and outcome.reason is RejectReason.DUPLICATE_ORDER_ID:
                    # A retry of this account's own block: the first send was accepted.
                    return Answer(201, accepted, replayed=True)
                body = problem_body(422, outcome.reason.value, outcome.message, order_id=order_id)
                return Answer(422, body)
            return Answer(201, accepted)

        if named is None:
            return respond(await send(), replayed=False)
        return await idempotent.run(account, named, send)

    @private.get("/fills", tags=["accounts"], summary="The account's fills, newest first")
    async def fills(
        principal: Reader,
        account_id: Annotated[Identifier | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[Fill]:
        account = account_of(principal, account_id)
        rows = await queries.account_fills(engine, account, limit)
        return [Fill(**r, price_per_std=market.per_std(r["symbol"], r["price"])) for r in rows]

    @private.get(
        "/accounts/{account_id}",
        tags=["accounts"],
        summary="Cash, capacity and positions of the account",
        responses=problems(404),
    )
    async def account(account_id: Identifier, principal: Reader) -> AccountOut:
        account_of(principal, account_id)
        found = await queries.account_summary(engine, account_id)
        if found is None:
            raise Problem(404, "unknown-account", f"account {account_id!r} has no settled history")
        return AccountOut(**found)

    async def deposit(command: DepositFunds | DepositCapacity, named: bool) -> Answer:
        key = deposit_key(command.account_id, command.deposit_id)
        outcome = await submit_and_wait(command, key)
        if outcome is None:
            body = {"deposit_id": command.deposit_id, "status": "pending"}
            return Answer(202, body, pending=True)
        if isinstance(outcome, DepositRejected):
            if named and outcome.reason is RejectReason.DUPLICATE_DEPOSIT_ID:
                # The account's own name, reserved for this request: an earlier send of it
                # was credited.
                body = {"deposit_id": command.deposit_id, "status": "deposited"}
                return Answer(201, body, replayed=True)
            body = problem_body(
                422, outcome.reason.value, outcome.message, deposit_id=command.deposit_id
            )
            return Answer(422, body)
        assert isinstance(outcome, FundsDeposited | CapacityDeposited)
        return Answer(201, {"deposit_id": command.deposit_id, "status": "deposited"})

    @private.post(
        "/accounts/{account_id}/deposits",
        status_code=201,
        response_model=DepositAnswer,
        tags=["accounts"],
        summary="Deposit cash (fen) or sellable capacity (units of a contract)",
        description="Participants deposit into their own account; only providers deposit "
        "capacity. A `deposit_id` or an `Idempotency-Key` header makes a retry return the "
        "first answer; the same name with a different deposit is refused "
        "(`idempotency-key-reused`), even while the first is pending.",
        responses=problems(404, 422),
    )
    async def post_deposit(
        account_id: Identifier,
        request: DepositRequest,
        principal: Reader,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        account = account_of(principal, account_id)
        if isinstance(request, CapacityDeposit):
            if principal.role not in (Role.PROVIDER, Role.OPERATOR):
                raise Problem(403, "forbidden", "only providers deposit capacity")
            contract_or_404(request.symbol)
        if request.deposit_id is not None:
            deposit_id = request.deposit_id
        elif idempotency_key is not None:
            deposit_id = derived_id("deposit", account, idempotency_key)
        else:
            deposit_id = f"d-{uuid.uuid4().hex}"
        command: DepositFunds | DepositCapacity
        if isinstance(request, CashDeposit):
            command = DepositFunds(deposit_id=deposit_id, account_id=account, amount=request.amount)
        else:
            command = DepositCapacity(
                deposit_id=deposit_id,
                account_id=account,
                symbol=request.symbol,
                quantity=request.quantity,
            )
        if idempotency_key is None and request.deposit_id is None:
            return respond(await deposit(command, named=False), replayed=False)
        names = [f"deposit-id:{deposit_id}"]
        if idempotency_key is not None:
            names.append(f"deposit-key:{idempotency_key}")
        named = Named(
            tuple(names),
            fingerprint("POST", f"/v1/accounts/{account}/deposits", request.model_dump()),
            # Where earlier versions of the API kept answers of deposits named by a key.
            legacy=() if idempotency_key is None else (f"deposit:{idempotency_key}",),
        )
        return await idempotent.run(account, named, lambda: deposit(command, named=True))

    @private.get(
        "/obligations",
        tags=["accounts"],
        summary="What the account sold per contract: units to deliver and payouts",
    )
    async def obligations(
        principal: Reader, account_id: Annotated[Identifier | None, Query()] = None
    ) -> list[Obligation]:
        account = account_of(principal, account_id)
        result = []
        for row in await queries.sold(engine, account):
            spec = catalogue.get(row["symbol"])
            start = None if spec is None else spec.delivery_start.isoformat()
            result.append(Obligation(delivery_start=start, **row))
        return result

    operator = APIRouter(prefix="/v1/admin", tags=["operator"], responses=problems(401, 403, 429))

    @operator.post(
        "/keys",
        status_code=201,
        summary="Create an API key; the key is shown only in this answer",
        responses=problems(409, 422),
    )
    async def new_key(request: KeyRequest, _: Operator) -> NewKeyOut:
        try:
            created = await create_key(engine, request.account_id, request.role, request.label)
        except RoleConflict as conflict:
            raise Problem(409, "role-conflict", str(conflict)) from None
        return NewKeyOut(key=created.key, **_key_out(created.info).model_dump())

    @operator.get("/keys", summary="API keys (never their secrets), oldest first")
    async def keys(
        _: Operator,
        account_id: Annotated[Identifier | None, Query()] = None,
        include_revoked: bool = False,
    ) -> list[KeyOut]:
        return [_key_out(k) for k in await list_keys(engine, account_id, include_revoked)]

    @operator.delete("/keys/{key_id}", summary="Revoke an API key", responses=problems(404))
    async def revoke(key_id: str, _: Operator) -> KeyOut:
        revoked = await revoke_key(engine, key_id)
        if revoked is None:
            raise Problem(404, "unknown-key", f"there is no API key {key_id!r}")
        keyring.forget(key_id)
        market.revoke({key_id}, KEY_REVOKED)
        return _key_out(revoked)

    @operator.get(
        "/events",
        summary="Replay: stored events after a global position, in order",
        description="Page through the whole history with `after` = the last position seen.",
    )
    async def events(
        _: Operator,
        after: Annotated[int, Query(ge=0, le=MAX_SQL_INT)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[StoredEventOut]:
        return [_event_out(e) for e in await runtime.store.read_all(after, limit)]

    @operator.get(
        "/streams/{stream_id}",
        summary="Replay: the events of one stream (contract-SYMBOL, account-ID, exchange)",
    )
    async def stream_events(
        stream_id: str,
        _: Operator,
        from_version: Annotated[int, Query(ge=1, le=MAX_SQL_INT)] = 1,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[StoredEventOut]:
        stored = await runtime.store.read_stream(stream_id, from_version)
        return [_event_out(e) for e in stored[:limit]]

    @operator.get(
        "/status",
        summary="Every stage's progress per partition, and every stall",
        description="The figures `/v1/health` reports, always with 200, and what could not be "
        "read. Set an event a stalled partition stopped at aside with `POST /v1/admin/set-aside`.",
    )
    async def pipeline_status(_: Operator) -> PipelineStatusOut:
        pipeline = await monitor.status()
        return PipelineStatusOut(
            checked_at=_iso(pipeline.checked_ms),
            stalled=pipeline.stalled,
            stall_seconds=pipeline.stall_seconds,
            stages=[_stage_out(p) for p in pipeline.partitions],
            stalls=[_stall_out(s) for s in pipeline.stalls],
            unreadable=list(pipeline.unreadable),
        )

    @operator.post(
        "/set-aside",
        summary="Set aside the event a stalled partition stopped at",
        description="Settlement sends the event to the dead-letter topic (`cx deadletters "
        "list`) and settles its partition on from the next one, within a second or so. Only "
        "an open `cannot_apply` stall can be set aside; `cx deadletters replay` appends the "
        "event again once its cause is fixed.",
        responses=problems(404, 422),
    )
    async def set_aside(request: SetAsideRequest, principal: Operator) -> SetAsideAnswer:
        try:
            stall = await mark_set_aside(
                engine, request.source, principal.account_id, request.reason
            )
        except ValueError as error:
            raise Problem(422, "invalid-request", str(error)) from None
        if stall is None:
            raise Problem(404, "no-stall", f"no stage is stalled at {request.source!r}")
        return SetAsideAnswer(
            source=stall.source,
            stage=stall.stage,
            event_id=stall.event_id,
            event_type=stall.event_type,
            set_aside_by=principal.account_id,
            reason=request.reason,
            status="requested",
        )

    async def control(
        principal: Principal, action: MarketAction, symbol: str, **fields: Any
    ) -> ControlAnswer:
        """Sign an operator's market command, send it and wait for the risk stage's answer."""
        command = runtime.seal.sign(
            ControlMarket(operator_id=principal.account_id, action=action, symbol=symbol, **fields)
        )
        outcome = await submit_and_wait(command, control_key(principal.account_id, symbol, action))
        status: Literal["requested", "pending"] = "pending" if outcome is None else "requested"
        if isinstance(outcome, MarketControlRejected):
            raise Problem(422, outcome.reason.value, outcome.message)
        return ControlAnswer(
            symbol=symbol, action=action, status=status, operator_id=principal.account_id
        )

    @operator.post(
        "/contracts/{symbol}/{action}",
        summary="Halt, resume, delist, list or band a contract, or schedule its family's auction",
        description="A command in the log like any other, so it replays; it records the "
        "operator's account and the reason given. `delist` closes the contract early and "
        "cancels its resting orders; `list` re-opens a delisted contract or lists one of the "
        "symbol grammar the catalogue does not list; `set_band` takes `band` (fen, 0: none) "
        "and a contract or a family `CLASS.REGION` as the symbol.",
        responses=problems(404, 422),
    )
    async def control_contract(
        symbol: str,
        action: Literal["halt", "resume", "schedule_auction", "delist", "list", "set_band"],
        request: ControlRequest,
        principal: Operator,
    ) -> ControlAnswer:
        if action == "list":
            try:
                parse_symbol(symbol)
            except SymbolError as error:
                raise Problem(404, "unknown-contract", str(error)) from None
        elif not (action == "set_band" and _is_family(symbol)):
            contract_or_404(symbol)
        for other in request.symbols:
            contract_or_404(other)
        if action == "set_band" and request.band is None:
            raise Problem(422, "invalid-request", "set_band needs a band (fen; 0: none)")
        return await control(
            principal,
            action,
            symbol,
            at=request.at,
            symbols=request.symbols,
            reason=request.reason,
            band=request.band,
        )

    @operator.post(
        "/market/{action}",
        summary="Halt or resume every contract of the market",
        description="Sent to every matching partition; each halts its continuous contracts "
        "(or resumes its halted ones through a call auction). Recorded with who and why.",
        responses=problems(422),
    )
    async def control_market(
        action: Literal["halt", "resume"], request: MarketControlRequest, principal: Operator
    ) -> ControlAnswer:
        market_action: MarketAction = "halt_market" if action == "halt" else "resume_market"
        return await control(principal, market_action, ALL_CONTRACTS, reason=request.reason)

    @operator.put(
        "/accounts/{account_id}/limits",
        summary="Set a participant's limits on its open orders (null: no limit)",
        description="Enforced by the risk stage of the account's partition: an order, block or "
        "amend that would take the account's open orders past a limit is rejected as "
        "`account_limit_exceeded`. Orders already open stay.",
    )
    async def set_limits(
        account_id: Identifier, request: LimitsRequest, principal: Operator
    ) -> LimitsAnswer:
        command = runtime.seal.sign(
            SetAccountLimits(
                operator_id=principal.account_id,
                account_id=account_id,
                max_open_quantity=request.max_open_quantity,
                max_open_notional=request.max_open_notional,
                reason=request.reason,
            )
        )
        outcome = await submit_and_wait(command, limits_key(account_id))
        return LimitsAnswer(
            account_id=account_id,
            max_open_quantity=request.max_open_quantity,
            max_open_notional=request.max_open_notional,
            status="set" if isinstance(outcome, AccountLimitsSet) else "pending",
            operator_id=principal.account_id,
        )

    @operator.get(
        "/history",
        summary="Export events by contract, account, order and log time (JSON lines or CSV)",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"application/x-ndjson": {}, "text/csv": {}},
                "description": "One event a line, in stored order",
            }
        },
    )
    async def export_history(
        _: Operator,
        contract: Annotated[str | None, Query(max_length=64)] = None,
        account_id: Annotated[Identifier | None, Query()] = None,
        order_id: Annotated[Identifier | None, Query()] = None,
        since_ts: Annotated[
            int | None, Query(ge=0, le=MAX_SQL_INT, description="log time, ms, inclusive")
        ] = None,
        until_ts: Annotated[
            int | None, Query(ge=0, le=MAX_SQL_INT, description="log time, ms, inclusive")
        ] = None,
        format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",
    ) -> StreamingResponse:
        query = history_query(contract, account_id, order_id, since_ts, until_ts)

        async def lines() -> AsyncIterator[bytes]:
            if format == "csv":
                yield (",".join(EXPORT_COLUMNS) + "\r\n").encode()
            async with engine.connect() as connection:
                result = await connection.stream(query.execution_options(yield_per=2000))
                async for row in result:
                    yield export_line(row, format).encode()

        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(lines(), media_type=media)

    @operator.get(
        "/replay",
        summary="Rebuild books, balances, positions and holds at a position or log time",
        responses=problems(404, 422),
    )
    async def replay_state(
        _: Operator,
        until: Annotated[
            str | None, Query(description="a position, or an ISO time with offset")
        ] = None,
        contract: Annotated[str | None, Query(max_length=64)] = None,
        account_id: Annotated[Identifier | None, Query()] = None,
    ) -> dict[str, Any]:
        if contract is not None and contract not in catalogue:
            raise Problem(404, "unknown-contract", f"contract {contract!r} is not listed")
        try:
            position, ts = parse_until(until) if until else (None, None)
        except ValueError as error:
            raise Problem(422, "invalid-time", str(error)) from None
        if position is not None and position > MAX_SQL_INT:
            raise Problem(
                422,
                "invalid-request",
                f"until: position {position} is past the largest there can be ({MAX_SQL_INT})",
                errors=[{"field": "until", "message": f"at most {MAX_SQL_INT}"}],
            )
        result = await replay(runtime.store, catalogue, position, ts)
        return replay_document(result, contract, account_id)

    @operator.get("/audit", summary="Check the whole history from the event store")
    async def audit_history(_: Operator) -> dict[str, Any]:
        report = await audit(runtime.store, catalogue)
        return {
            "events": report.events,
            "orders": report.orders,
            "trades": report.trades,
            "checkpoints": report.checkpoints,
            "state_hash": report.state_hash,
            "discrepancies": [
                {"kind": d.kind, "message": d.message, "positions": list(d.positions)}
                for d in report.discrepancies
            ],
        }

    reports = APIRouter(prefix="/v1/reports", tags=["reports"], responses=problems(401, 403, 429))

    @reports.get("/trades", summary="Settled trades with counterparties, newest first")
    async def trade_report(
        _: Auditor,
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
        rows = await queries.trades_report(
            engine,
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

    streams = APIRouter(prefix="/v1", tags=["streams"])

    @streams.get(
        "/stream/sse",
        summary="Market data and private updates as Server-Sent Events",
        description="`symbols` and `channels` (quote, depth, trades, candles, stats; default "
        "quote,trades) are comma-separated; `private` (orders, fills, balances, obligations) "
        "needs an API key. Messages are the WebSocket's; `event:` is their type.",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "The event stream"},
            **problems(401, 404, 422, 429),
        },
    )
    async def sse(
        principal: Caller,
        symbols: Annotated[str | None, Query(max_length=6500)] = None,
        channels: Annotated[str | None, Query(max_length=200)] = None,
        private: Annotated[str | None, Query(max_length=200)] = None,
    ) -> StreamingResponse:
        subscriber = sse_subscriber(
            market, principal, parse_list(symbols), parse_list(channels), parse_list(private)
        )
        return StreamingResponse(
            sse_events(market, subscriber),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        await websocket_stream(websocket, market, gate)

    needs = NeedService(engine, catalogue, market, submit_and_wait)
    app.state.needs = needs
    for router in (
        public,
        private,
        needs_router(needs),
        bank_router(engine, catalogue, market, submit_and_wait, runtime.seal, idempotent),
        operator,
        reports,
        streams,
        stall_router(engine),
    ):
        app.include_router(router)

    web = resources.files("api").joinpath("web")
    page = web.joinpath("index.html").read_text()

    @app.get("/", include_in_schema=False)
    async def supermarket() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount("/web", StaticFiles(directory=str(web)), name="web")
    return app


async def _eventually_settled(engine: Any, order_id: str) -> dict[str, Any] | None:
    deadline = asyncio.get_running_loop().time() + SETTLE_WAIT_S
    while True:
        row = await queries.order(engine, order_id)
        if row is not None or asyncio.get_running_loop().time() > deadline:
            return row
        await asyncio.sleep(0.05)


def _order_name(
    prefix: str, client_order_id: str | None, idempotency_key: str | None, print_: str
) -> tuple[str, Named | None]:
    """The id to send an order (`o`) or block (`b`) as, and its names if the caller named it:
    the client order id, else the `Idempotency-Key`'s (`key_name`), else a new id."""
    if client_order_id is None and idempotency_key is None:
        return f"{prefix}-{uuid.uuid4().hex}", None
    name = client_order_id if client_order_id is not None else key_name(str(idempotency_key))
    names = [f"order:{name}"]
    legacy = []
    if idempotency_key is not None:
        names.append(f"{prefix}-key:{idempotency_key}")
    if prefix == "o":
        # Where earlier versions of the API kept answers of named orders (blocks had none).
        legacy = [f"key:{idempotency_key}"] if idempotency_key is not None else []
        legacy += [f"coid:{client_order_id}"] if client_order_id is not None else []
    return name, Named(tuple(names), print_, tuple(legacy))


def _accepted(order_id: str, client_order_id: str | None) -> dict[str, Any]:
    return {"order_id": order_id, "client_order_id": client_order_id, "status": "accepted"}


def _pending(order_id: str, client_order_id: str | None) -> Answer:
    body = {"order_id": order_id, "client_order_id": client_order_id, "status": "pending"}
    return Answer(202, body, pending=True)


def _answer_from_row(row: dict[str, Any]) -> Answer:
    if row["status"] == "rejected":
        body = problem_body(
            422,
            row["reason"] or "rejected",
            f"order {row['order_id']!r} was rejected: {row['reason']}",
            order_id=row["order_id"],
        )
        return Answer(422, body, replayed=True)
    return Answer(201, _accepted(row["order_id"], row["client_order_id"]), replayed=True)


_NOT_THE_ACCOUNTS_OPEN_ORDER = frozenset(
    {RejectReason.UNKNOWN_ORDER, RejectReason.NOT_ORDER_OWNER, RejectReason.ORDER_NOT_OPEN}
)


def _not_changed(refused: CancelRejected | AmendRejected) -> Problem:
    """The problem of a cancel or amend refused because the order is not open: 409 for a
    closed order of the account; 404 `unknown_order` alike for an id never used and for
    another account's order, so the answer reveals nothing of other accounts."""
    if refused.reason is RejectReason.ORDER_NOT_OPEN:
        return Problem(409, refused.reason.value, refused.message, order_id=refused.order_id)
    if refused.reason in _NOT_THE_ACCOUNTS_OPEN_ORDER:
        return Problem(
            404,
            RejectReason.UNKNOWN_ORDER.value,
            f"account {refused.account_id} has no open order {refused.order_id!r}",
            order_id=refused.order_id,
        )
    return Problem(422, refused.reason.value, refused.message, order_id=refused.order_id)


def _is_family(name: str) -> bool:
    try:
        parse_family(name)
    except SymbolError:
        return False
    return True


def _key_out(info: KeyInfo) -> KeyOut:
    return KeyOut(
        key_id=info.key_id,
        account_id=info.account_id,
        role=info.role,
        label=info.label,
        created_at=info.created_at.isoformat(),
        revoked_at=None if info.revoked_at is None else info.revoked_at.isoformat(),
    )


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema to write into a response, its parts referring to the document's
    components (which the models of other responses put there)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _stage_out(progress: PartitionProgress) -> StageProgress:
    return StageProgress(
        stage=progress.stage,
        topic=progress.topic,
        partition=progress.partition,
        end_offset=progress.end_offset,
        offset=progress.offset,
        lag=progress.lag,
        progressing=progress.progressing,
        idle_seconds=progress.idle_ms / 1000,
    )


def _stall_out(stall: StalledPartition) -> StalledStage:
    return StalledStage(
        stage=stall.stage,
        topic=stall.topic,
        partition=stall.partition,
        kind=stall.kind,
        since=_iso(stall.since_ms),
        lag=stall.lag,
        detail=stall.detail,
        offset=stall.offset,
        event_id=stall.event_id,
        event_type=stall.event_type,
        attempts=stall.attempts,
        set_aside_by=stall.set_aside_by,
    )


def _event_out(event: StoredEvent) -> StoredEventOut:
    return StoredEventOut(
        position=event.position,
        stream_id=event.stream_id,
        stream_version=event.stream_version,
        event_id=event.event_id,
        type=event.type,
        schema_version=event.schema_version,
        data=event.data,
        metadata=event.metadata,
        recorded_at=event.recorded_at.isoformat(),
    )
